"""Where a request's time goes inside the pipeline, at a fixed live load.

    python -m benchmarks.stages [--rate 1830] [--seconds 10]

Runs the tabular model's pipeline (npy requests of 64 instances, the benchmark's tabular batching)
under a live load generator, through a Pipeline subclass that stamps each request when the loop
takes it from the consumer and when its answer is handed to the producer. It prints:
- per-request latency split into "before the loop" (broker, fetch, waiting in the consumer while
  the loop is busy) and "inside the loop" (batching, scoring, encoding);
- the pipeline thread's wall time by activity (poll, decode, model call, publish).

This is the measurement behind RESULTS.md's latency analysis. Like the latency runs, it first warms
the pipeline up for 2 s at the same rate and measures only what follows. It also answers whether
moving work to another thread could help: only the time outside the model call could overlap, and
on 2 cores the model call already uses both.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _TimedScorer:
    """The scorer, with its wall time counted (the stream sees the same attributes)."""

    def __init__(self, scorer, busy: Counter) -> None:
        self._scorer, self._busy = scorer, busy
        self.info = scorer.info

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        t = time.perf_counter()
        try:
            return self._scorer(x)
        finally:
            self._busy["model call"] += time.perf_counter() - t

    def warmup(self, up_to: int | None = None) -> None:
        self._scorer.warmup(up_to)


def timed_pipeline_class():
    """A Pipeline subclass that records per-request stage times and per-activity busy time."""
    from adae_stream.stream.app import Pipeline

    class TimedPipeline(Pipeline):
        def __init__(self, config, scorer, metrics=None, bootstrap_servers=None) -> None:
            self.busy: Counter = Counter()
            super().__init__(config, _TimedScorer(scorer, self.busy), metrics, bootstrap_servers)
            self.taken: dict[tuple[int, int], float] = {}
            self.stages: list[tuple[float, float, float]] = []  # request CreateTime, taken, answered (ms)
            self.window: tuple[float, float] | None = None  # first take .. last answer (perf_counter s)
            self.busy_in_window: dict[str, float] = {}

            # the record path's two ends, timed where the loop calls them (instance attributes shadow the methods)
            ingest, publish = self.path.ingest, self.path._publish
            self.path.ingest = self._timed_ingest(ingest)  # type: ignore[method-assign]
            self.path._publish = self._timed_publish(publish)  # type: ignore[method-assign]

        def _on_connected(self) -> None:
            super()._on_connected()
            poll = self.consumer.poll

            def timed_poll(*a, **k):
                t = time.perf_counter()
                try:
                    return poll(*a, **k)
                finally:
                    self.busy["poll"] += time.perf_counter() - t

            self.consumer.poll = timed_poll

        def _timed_ingest(self, ingest):
            def timed(rec) -> None:
                self.taken[(rec.partition, rec.offset)] = time.time() * 1000.0
                t = time.perf_counter()
                if self.window is None and (rec.key or b"").startswith(b"lat-"):  # measured load starts here
                    self.busy.clear()
                    self.window = (t, t)
                ingest(rec)
                self.busy["decode"] += time.perf_counter() - t

            return timed

        def _timed_publish(self, publish):
            def timed(lane, req, result) -> None:
                r = req.record
                taken = self.taken.pop((r.partition, r.offset))
                if not (r.key or b"").startswith(b"lat-"):
                    return publish(lane, req, result)  # warm-up traffic: answered, not measured
                self.stages.append((r.timestamp, taken, time.time() * 1000.0))
                t = time.perf_counter()
                publish(lane, req, result)
                self.busy["publish"] += time.perf_counter() - t
                self.window = (self.window[0], time.perf_counter())
                self.busy_in_window = dict(self.busy)  # idle polls after the last answer do not count

            return timed

    return TimedPipeline


def profile(
    bootstrap: str,
    det,
    det_path: str,
    x: np.ndarray,
    rate_rps: float,
    seconds: float,
    max_batch: int,
    buckets: list[int],
) -> dict:
    from benchmarks import e2e

    pipeline, _ = e2e.pipeline_at_load(
        bootstrap, det, det_path, x, 64, rate_rps, seconds, max_batch, buckets, pipeline_cls=timed_pipeline_class()
    )
    wall = pipeline.window[1] - pipeline.window[0]
    st = np.array(pipeline.stages)
    split = {
        "before the loop": st[:, 1] - st[:, 0],
        "inside the loop": st[:, 2] - st[:, 1],
        "total": st[:, 2] - st[:, 0],
    }
    return {
        "rate_rps": rate_rps,
        "requests": len(st),
        "wall_s": wall,
        "latency_ms": {k: {f"p{q}": float(np.percentile(v, q)) for q in (50, 90, 99)} for k, v in split.items()},
        "busy_s": pipeline.busy_in_window,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.stages")
    ap.add_argument(
        "--rate",
        type=float,
        default=1830.0,
        help="requests/s offered, 64 instances each (default: about half the live saturating load here)",
    )
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args(argv)

    from adae_stream import save_detector
    from adae_stream.stream.broker import EmbeddedBroker
    from benchmarks.models import BATCHING, tabular

    det, x = tabular()
    path = str(save_detector(det, f"{tempfile.mkdtemp(prefix='adae-stages-')}/tabular"))
    with EmbeddedBroker() as broker:
        r = profile(broker.bootstrap, det, path, x, args.rate, args.seconds, *BATCHING["tabular"])
    print(
        f"tabular npy, {r['rate_rps']:.0f} requests/s x 64 instances, {r['requests']} requests, {r['wall_s']:.1f} s "
        "from the first request taken to the last answer"
    )
    for stage, q in r["latency_ms"].items():
        print(f"  {stage:16s} p50 {q['p50']:6.1f} ms  p90 {q['p90']:6.1f} ms  p99 {q['p99']:6.1f} ms")
    print(
        "  pipeline thread, share of that time: "
        + ", ".join(f"{k} {v / r['wall_s']:.0%}" for k, v in sorted(r["busy_s"].items(), key=lambda kv: -kv[1]))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
