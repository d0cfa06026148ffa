"""The loop's own CPU per request, without a broker: the real Pipeline on the stand-in clients of the fast
tests (tests/stand_ins.py: an in-memory log), fed V2 JSON requests of the tabular model, k per turn.

    python -m benchmarks.loop_cpu [--per-request 64] [--per-turn 16] [--turns 3000] [--profile] [--standard-json]

It prints the microseconds per request of the loop (decode, batch, score, encode, bookkeeping and the
stand-ins' own small cost) and of the model call alone on the same batches; --profile adds cProfile's
table of the loop's own functions. The Kafka client's work (fetch parsing, record batches, the network)
is not in it: that is what benchmarks.json_codec's pass-through measures.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import os
import pstats
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.loop_cpu")
    ap.add_argument("--per-request", type=int, default=64, help="instances per request")
    ap.add_argument("--per-turn", type=int, default=16, help="requests fed before each loop turn")
    ap.add_argument("--turns", type=int, default=3000, help="requests measured (rounded to whole turns)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--standard-json", action="store_true", help="the standard library's json in orjson's place")
    args = ap.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.standard_json:
            from benchmarks.json_codec import standard_library_json

            stack.enter_context(standard_library_json())
        return measure(args)


def measure(args: argparse.Namespace) -> int:

    from adae_stream import save_detector
    from adae_stream.codecs import encode_request
    from adae_stream.config import load_config
    from adae_stream.runner import load_scorer
    from adae_stream.stream.app import Pipeline
    from benchmarks.models import BATCHING, tabular
    from tests.stand_ins import MemoryBroker, MemoryClients

    det, x = tabular()
    path = str(save_detector(det, f"{tempfile.mkdtemp(prefix='adae-loop-cpu-')}/tabular"))
    max_batch, buckets = BATCHING["tabular"]
    cfg = load_config(
        None,
        environ={},
        overrides={
            "kafka": {"bootstrap_servers": "memory:0", "input_topic": "in", "output_topic": "out"},
            "detector": {"path": path},
            "metrics": {"enabled": False},
            "batching": {"max_batch_size": max_batch, "bucket_sizes": buckets},
        },
    )
    scorer = load_scorer(cfg)
    broker = MemoryBroker()
    pipeline = Pipeline(cfg, scorer, None, "memory:0", clients=MemoryClients(broker, cfg))
    assert pipeline.connect()
    pipeline.turn()
    per, k = args.per_request, args.per_turn
    requests = [encode_request(np.roll(x, -i, axis=0)[:per], "v2", f"r{i}") for i in range(64)]

    def feed(turns: int) -> None:
        for t in range(turns):
            for j in range(k):
                payload, headers = requests[(t * k + j) % len(requests)]
                broker.produce("in", payload, None, list(headers))
            pipeline.turn()

    turns = max(1, args.turns // k)
    feed(max(1, 500 // k))
    gc.freeze()  # as the service does when its loop starts (stream/app.py)
    t0 = time.perf_counter()
    feed(turns)
    loop_us = (time.perf_counter() - t0) / (turns * k) * 1e6
    batch = np.concatenate([x] * (per * k // len(x) + 1))[: per * k]
    t0 = time.perf_counter()
    for _ in range(turns):
        scorer(batch)
    model_us = (time.perf_counter() - t0) / (turns * k) * 1e6
    codec = " (standard library json)" if args.standard_json else ""
    print(
        f"tabular V2 JSON{codec}, {per} instances per request, {k} requests per turn: loop {loop_us:.1f} us per "
        f"request, of which the model call on the same batches {model_us:.1f} us"
    )
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        feed(turns)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
