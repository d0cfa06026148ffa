"""``adae-stream tail``: read answers from the output topic and print one line each."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from adae_stream.cli.common import bootstrap_servers, config_if_present
from adae_stream.codecs.records import PREDICTION_HEADER
from adae_stream.errors import UnreadableAnswer
from adae_stream.scoring import CORRECTED, INSTANCE_SCORE, IS_ADVERSARIAL, PREDICTION

if TYPE_CHECKING:
    from adae_stream.cli.common import Subparsers

POLL_MS = 500
SHOWN_PREDICTIONS = 16  # published labels printed per answer


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("tail", help="read and pretty-print answers from the output topic")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: config)")
    parser.add_argument("--topic", help="default: kafka.output_topic")
    parser.add_argument("--from-beginning", action="store_true")
    parser.add_argument("--max", type=int, default=0, help="stop after this many answers (0: forever)")
    parser.add_argument("--timeout", type=float, default=0.0, help="stop after this many idle seconds (0: never)")
    parser.add_argument("--config", default="config.yaml")
    parser.set_defaults(func=run)


def describe(record: Any) -> str:
    """One answer record as one line; an unreadable one says so instead of stopping the tail."""
    from adae_stream.codecs import decode_response

    try:
        answer = decode_response(record.value, record.headers)
    except UnreadableAnswer as exc:
        return f"p{record.partition}@{record.offset}: unreadable answer: {exc}"
    flags = answer.get(IS_ADVERSARIAL, np.zeros(0, bool))
    scores = answer.get(INSTANCE_SCORE)
    score_text = f" max score {float(np.max(scores)):.4g}" if scores is not None and len(scores) else ""
    published = answer.get(PREDICTION, answer[CORRECTED])  # answers written before `prediction` carry corrected
    which = dict(record.headers or ()).get(PREDICTION_HEADER, b"corrected").decode(errors="replace")
    shown = json.dumps(published[:SHOWN_PREDICTIONS].tolist())
    return f"{answer['id']}: n={len(published)} flagged={int(np.sum(flags))}{score_text} {which}={shown}"


def run(args: argparse.Namespace) -> int:
    from adae_stream.clients.build import plain_reader

    cfg = config_if_present(args.config)
    topic = args.topic or cfg.kafka.output_topic
    consumer = plain_reader(cfg.kafka, bootstrap_servers(args, cfg), topic, from_beginning=args.from_beginning)
    printed, idle_since = 0, time.monotonic()
    try:
        while not args.max or printed < args.max:
            polled = consumer.poll(timeout_ms=POLL_MS)
            if not polled and args.timeout and time.monotonic() - idle_since > args.timeout:
                break
            for record in (record for records in polled.values() for record in records):
                if args.max and printed >= args.max:
                    break  # the limit counts answers, not polls
                idle_since = time.monotonic()
                printed += 1
                print(describe(record))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
