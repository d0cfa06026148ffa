"""``detector.jit_compile``: TF's graph alone, XLA alone, and auto (XLA per bucket where warm-up measures it
faster), per model, in one process taking turns (issue 40).

    python -m benchmarks.compile_choice [--rounds 2] [--models tabular digits cifar]

For the tabular, digits and CIFAR-shaped models (benchmarks/models.py; digits at the service's default
buckets, tabular and CIFAR at their BATCHING): each form's warm-up (build and compile every bucket, and
auto's timing), the buckets auto gave XLA, the stream scorer's call back to back at batch 1, 32 and 256
(best of three windows taken in turns, benchmarks.compute.rates), and the batch-1 call after 25 ms idle
(median of 100; what a lone request at low load meets).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FORMS = {"graph": False, "XLA": True, "auto": "auto"}
BATCHES = (1, 32, 256)


def idle_call_us(scorer, x: np.ndarray, calls: int = 100, idle_s: float = 0.025) -> float:
    times = []
    for _ in range(calls):
        time.sleep(idle_s)
        start = time.perf_counter()
        scorer(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def one_model(name: str, det, x: np.ndarray, buckets: list[int]) -> None:
    from benchmarks.compute import rates

    scorers, warmup_s = {}, {}
    for form, choice in FORMS.items():
        start = time.perf_counter()
        scorer = det.stream_scorer(buckets, jit_compile=choice)
        scorer.warmup()
        warmup_s[form] = time.perf_counter() - start
        scorers[form] = scorer
    print(f"  {name}: warm-up " + ", ".join(f"{f} {s:.2f} s" for f, s in warmup_s.items()), end="")
    print(f"; auto gave XLA to buckets {scorers['auto'].fused.alternative_buckets or 'none'}")
    for b in BATCHES:
        xb = x[:b]
        r = rates(
            {form: (lambda s=s, xb=xb: s(xb)) for form, s in scorers.items()}, b, min_time_s=0.6 if b < 256 else 1.5
        )
        us = {form: b / r[form] * 1e6 for form in scorers}
        print(
            f"    batch {b:4d}: µs per call "
            + ", ".join(f"{f} {u:,.0f}" for f, u in us.items())
            + f"  (graph/auto {us['graph'] / us['auto']:.2f}x)"
        )
    idle = {form: idle_call_us(s, x[:1]) for form, s in scorers.items()}
    print("    batch 1 after 25 ms idle: µs " + ", ".join(f"{f} {u:,.0f}" for f, u in idle.items()), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compile_choice")
    ap.add_argument("--rounds", type=int, default=2, help="each model's comparison, this many times")
    ap.add_argument("--models", nargs="+", default=["tabular", "digits", "cifar"])
    args = ap.parse_args(argv)

    from adae_stream.config import BatchingConfig
    from benchmarks.models import BATCHING, cifar, digits, tabular

    models = {
        "tabular": (tabular, BATCHING["tabular"][1]),
        "digits": (digits, BatchingConfig().bucket_sizes),
        "cifar": (cifar, BATCHING["cifar"][1]),
    }
    for name in args.models:
        build, buckets = models[name]
        det, x = build()
        for r in range(args.rounds):
            print(f"round {r + 1}", end="")
            one_model(name, det, x, buckets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
