"""``adae-stream produce``: replay a .npy file as requests, in any request format the pipeline reads."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

import numpy as np

from adae_stream.cli.common import bootstrap_servers, config_if_present, fail
from adae_stream.codecs import REQUEST_FORMATS

if TYPE_CHECKING:
    from adae_stream.cli.common import Subparsers


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("produce", help="replay a .npy file as requests to the input topic")
    parser.add_argument("--file", required=True)
    parser.add_argument(
        "--format",
        choices=REQUEST_FORMATS,
        default="v2",
        help="proto: OIP protobuf with raw contents; triton: V2 JSON with a binary tensor tail",
    )
    parser.add_argument("--batch", type=int, default=8, help="instances per request")
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second (0: as fast as possible)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: config)")
    parser.add_argument("--topic", help="default: the first of kafka.input_topic")
    parser.add_argument("--config", default="config.yaml")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adae_stream.clients.build import plain_producer
    from adae_stream.codecs import encode_request
    from adae_stream.config import input_topics

    cfg = config_if_present(args.config)
    topic = args.topic or next(iter(input_topics(cfg.kafka)), None)
    if topic is None:
        fail("kafka.input_pattern names no topic to produce to: give --topic")
    X = np.load(args.file, allow_pickle=False)
    producer = plain_producer(cfg.kafka, bootstrap_servers(args, cfg))
    interval_s = 1.0 / args.rate if args.rate > 0 else 0.0
    start = time.monotonic()
    sent = 0
    for first in range(0, len(X), args.batch):
        request_id = f"req-{int(start * 1000)}-{sent}"
        payload, headers = encode_request(X[first : first + args.batch], args.format, request_id)
        producer.send(topic, value=payload, key=request_id.encode(), headers=headers)
        sent += 1
        if interval_s:
            time.sleep(max(0.0, start + sent * interval_s - time.monotonic()))
    producer.flush()
    producer.close()
    print(f"produced {sent} requests ({len(X)} instances, {args.format}) to {topic}")
    return 0
