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


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "decide", help="decide the defense and the rollout from live evidence, into the repository's policy.yaml"
    )
    parser.add_argument("--config", default=os.environ.get("ADAE_CONFIG", "config.yaml"))
    parser.add_argument("--once", action="store_true", help="read the ledger, check once, write, and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from adae_stream.clients import KafkaError
    from adae_stream.decisions.metrics import DecisionMetrics
    from adae_stream.decisions.service import DecisionService
    from adae_stream.monitoring.server import MetricsServer

    cfg = load_config_or_exit(args.config)
    setup_logging(cfg.log_level)
    if cfg.kafka.bootstrap_servers == "embedded":
        fail("config key 'kafka.bootstrap_servers': decide reads the replicas' broker; 'embedded' is the demo's own")
    metrics = DecisionMetrics(CollectorRegistry())
    try:
        service = DecisionService(cfg, cfg.kafka.bootstrap_servers, metrics)
    except (*STARTUP_ERRORS, ValueError, KafkaError) as exc:  # a bad state file, the broker unreachable
        fail(str(exc))
    server = None
    if cfg.decisions.metrics_port and not args.once:
        server = MetricsServer(metrics.registry, cfg.metrics.host, cfg.decisions.metrics_port, ready=lambda: True)
        server.start()
        logging.getLogger(__name__).info("decision metrics: http://%s:%d/metrics", cfg.metrics.host, server.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if args.once:
            service.check()
        else:
            service.run(stop)
    finally:
        service.close()
        if server is not None:
            server.stop()
    return 0
