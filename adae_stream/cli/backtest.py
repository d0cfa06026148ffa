"""``adae-stream backtest``: the change detectors over recorded answers (README, "Change detection")."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adae_stream.cli.common import bootstrap_servers, config_if_present, fail

EPISODE_S = 900.0  # as the alerts: they resolve 15 minutes after the last alarm (deploy/prometheus/alerts.yml)

if TYPE_CHECKING:
    from adae_stream.cli.common import Subparsers
    from adae_stream.config import Config


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "backtest",
        help="run the change detectors over recorded answers and print when each would have alarmed (the first "
        "alarm of each episode, as the alerts would fire, with the change's estimated start)",
    )
    parser.add_argument("--config", default=os.environ.get("ADAE_CONFIG", "config.yaml"))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="answers, one JSON body per line, as the output topic carries them")
    source.add_argument(
        "--topic", nargs="?", const="", help="read a topic from its start (default: kafka.output_topic)"
    )
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: config)")
    parser.add_argument("--rate", type=float, default=200.0, help="--file without a 't' per line: answers per second")
    parser.add_argument("--detector", help="a detector directory, for the score-shape charts (its reference scores)")
    parser.add_argument("--baseline-instances", type=int, help="default: monitoring.baseline_instances")
    parser.add_argument("--false-alarm-every", help="default: monitoring.false_alarm_every, e.g. 30d")
    parser.set_defaults(func=run)


def _from_file(path: Path, rate: float) -> Iterator[tuple[float, dict[str, Any]]]:
    from adae_stream.codecs import decode_response
    from adae_stream.errors import UnreadableAnswer

    with path.open("rb") as handle:
        for i, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                t = json.loads(line).get("t", i / rate)
                yield float(t), decode_response(line, [])
            except (UnreadableAnswer, ValueError, AttributeError) as exc:
                print(f"line {i + 1} skipped: {exc}", file=sys.stderr)


def _from_topic(cfg: Config, bootstrap: str, topic: str) -> Iterator[tuple[float, dict[str, Any]]]:
    from adae_stream.clients.build import plain_reader
    from adae_stream.codecs import decode_response
    from adae_stream.errors import UnreadableAnswer
    from adae_stream.feedback.tail import ResumingReader

    records: list = []
    reader = ResumingReader(plain_reader(cfg.kafka, bootstrap, client_id=f"{cfg.kafka.client_id}-backtest"), topic)
    try:
        reader.read({}, records.append, timeout_s=600)
    finally:
        reader.close()
    for rec in sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset)):
        try:
            yield rec.timestamp / 1000.0, decode_response(rec.value, rec.headers)
        except UnreadableAnswer as exc:
            print(f"{rec.topic}-{rec.partition}@{rec.offset} skipped: {exc}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from adae_stream.changes.backtest import Backtest, backtest
    from adae_stream.changes.service import describe, when
    from adae_stream.config import MonitoringConfig
    from adae_stream.feedback.summaries import reference_edges

    cfg = config_if_present(args.config)
    updates: dict[str, Any] = {}
    if args.baseline_instances:
        updates["baseline_instances"] = args.baseline_instances
    if args.false_alarm_every:
        updates["false_alarm_every"] = args.false_alarm_every
    try:
        monitoring = MonitoringConfig.model_validate({**cfg.monitoring.model_dump(), **updates})
    except ValueError as exc:
        fail(f"backtest: {exc}")
    edges = None
    if args.detector:
        from adae_stream.detector.saving import read_detector_config

        reference = read_detector_config(args.detector).get("reference_scores")
        edges = reference_edges(None if reference is None else np.asarray(reference))
    if args.file:
        if not Path(args.file).is_file():
            fail(f"backtest: no file {args.file}")
        answers = _from_file(Path(args.file), args.rate)
    else:
        answers = _from_topic(cfg, bootstrap_servers(args, cfg), args.topic or cfg.kafka.output_topic)
    last: dict[tuple[str, ...], float] = {}  # the alert's episodes: an alarm within 15 min of the last continues one
    for item in backtest(monitoring, answers, edges, cfg.detector.model_name):
        if isinstance(item, Backtest):
            span = "" if item.first_t is None else f" from {when(item.first_t)} to {when(item.last_t or 0)}"
            print(f"{item.answers} answers, {item.instances} instances{span}: {len(item.alarms)} alarms")
            for (detector, version, _role), s in item.monitor.sets.items():
                state = "watched" if s.ready else f"still warming up ({s.progress():.0%})"
                print(f"  {detector} version {version}: baseline {s.baseline.items} instances, {state}")
        else:
            episode = (item.detector, item.version, item.role, item.event)
            if item.alarm.alarmed - last.get(episode, -float("inf")) > EPISODE_S:
                print(f"{when(item.alarm.alarmed)} {describe(item, None)}")
            last[episode] = item.alarm.alarmed
    return 0
