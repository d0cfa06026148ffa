"""``adae-stream decide``: the repository's decision-maker (README, "Decisions from live evidence")."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING

from adae_stream.cli.common import fail, load_config_or_exit, setup_logging
from adae_stream.errors import STARTUP_ERRORS

if TYPE_CHECKING:
    from adae_stream.cli.common import Subparsers
    from adae_stream.config import Config


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "decide",
        help="decide the defense and the rollout from live evidence, into the repository's policy.yaml, and "
        "watch the fleet's flags, score shape and class mix for changes",
    )
    parser.add_argument("--config", default=os.environ.get("ADAE_CONFIG", "config.yaml"))
    parser.add_argument("--once", action="store_true", help="read the ledger and the summaries, check once, and exit")
    parser.add_argument(
        "--rebaseline",
        metavar="DETECTOR",
        help="the present is the new normal: DETECTOR's change detectors warm up again (run with decide stopped)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from adae_stream.changes.metrics import ChangeMetrics
    from adae_stream.changes.service import ChangeService
    from adae_stream.clients import KafkaError
    from adae_stream.decisions.metrics import DecisionMetrics
    from adae_stream.decisions.service import DecisionService
    from adae_stream.monitoring.server import MetricsServer

    cfg = load_config_or_exit(args.config)
    setup_logging(cfg.log_level)
    if cfg.kafka.bootstrap_servers == "embedded":
        fail("config key 'kafka.bootstrap_servers': decide reads the replicas' broker; 'embedded' is the demo's own")
    if not cfg.kafka.feedback_topic and not cfg.monitoring.enabled:
        fail(
            "config key 'kafka.feedback_topic': decisions need labels (and their evidence topic), and "
            "monitoring.enabled is false: nothing to decide or watch"
        )
    registry = CollectorRegistry()
    decisions = changes = None
    try:
        if args.rebaseline:
            return _rebaseline(cfg, args.rebaseline)
        if cfg.kafka.feedback_topic:
            decisions = DecisionService(cfg, cfg.kafka.bootstrap_servers, DecisionMetrics(registry))
        if cfg.monitoring.enabled:
            changes = ChangeService(cfg, cfg.kafka.bootstrap_servers, ChangeMetrics(registry))
    except (*STARTUP_ERRORS, ValueError, KafkaError) as exc:  # a bad state file, the broker unreachable
        if decisions is not None:
            decisions.close()
        fail(str(exc))
    server = None
    if cfg.decisions.metrics_port and not args.once:
        server = MetricsServer(registry, cfg.metrics.host, cfg.decisions.metrics_port, ready=lambda: True)
        server.start()
        logging.getLogger(__name__).info("decision metrics: http://%s:%d/metrics", cfg.metrics.host, server.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    watcher = None
    try:
        if args.once:
            if changes is not None:
                changes.check()
            if decisions is not None:
                decisions.check()
        else:
            if changes is not None:
                watcher = threading.Thread(target=changes.run, args=(stop,), name="adae-changes", daemon=True)
                watcher.start()
            if decisions is not None:
                decisions.run(stop)
            else:
                stop.wait()
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=30)
        for service in (changes, decisions):
            if service is not None:
                service.close()
        if server is not None:
            server.stop()
    return 0


def _rebaseline(cfg: Config, detector: str) -> int:
    """Edits the saved state alone (no broker): the running monitor holds the lock, so this runs without it."""
    from adae_stream.changes.service import rebaseline_saved

    n = rebaseline_saved(cfg, detector)
    print(f"{detector}: {n} chart sets warm up again when adae-stream decide starts")
    return 0
