"""``detector.jit_compile: auto``: per bucket, the faster of the backend's two compiled forms, timed at warm-up.

Why per bucket and by timing: on TensorFlow, XLA's win is the per-call overhead it removes, and its kernels
can be slower than TF's own on convolutions. On the 2-core development VM, the stream scorer's call (µs,
graph / XLA): tabular Dense 215-340 / 72 at batch 1, 426-439 / 241-264 at 32, 526-537 / 288-347 at 256;
digits conv 679-937 / 186 at batch 1, 1,269-1,610 / 889-1,021 at 32, 2,553-3,468 / 4,318-5,923 at 256
(XLA loses); CIFAR-shaped conv about equal at 1 and 32 and 2x slower at 256. No one setting wins for every
model, and one model's crossover is a batch size, so the choice is made where it is measured.

Why upward and stopping at the first loss: XLA's advantage shrinks as the batch grows (every pair above),
so once it loses at one bucket the larger ones keep the graph form, and their XLA compiles (the larger
share of its ~2.5 s for seven buckets) are never paid.

Why remembered per architecture: a call's cost follows from the layers and shapes, not the weights, so a
new version of the same network (the usual hot swap) takes the choice its predecessor's warm-up timed, at
start, on a quiet machine. Timing again under live traffic would read the loop's noise, spend up to
BUDGET_S of busy calls per bucket beside the loop, and compile the losing form of every bucket.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# XLA is kept only when clearly faster: near a tie the choice would flip between replicas with the noise
MARGIN = 0.05
# 15, not 7: with 7 pairs one of two digits runs gave XLA to buckets 128-256, where it is 1.17x slower; with
# 15 all four runs stopped at 64 (benchmarks/RESULTS.md, "XLA per bucket"). 15 pairs of the largest
# bucket that wins cost ~0.1 s; the budget below bounds the rest.
MAX_PAIRS = 15
MIN_PAIRS = 2
BUDGET_S = 0.25  # per bucket: a conv model's large bucket takes ~100 ms a call here


# (architecture, input shape, buckets warmed) -> the buckets that took the alternative form; one process
# serves a few architectures (detector.max_detectors bounds them), so this stays small
REMEMBERED: dict[tuple, tuple[int, ...]] = {}


def architecture(*models: Any) -> tuple:
    """What a call's cost depends on: each model's layer types and its weights' shapes and dtypes. Settings
    that change the cost without changing a weight's shape (a stride, a padding) are not in it, so two such
    networks would share a choice: either form computes the same scores, so that can cost speed, never a
    wrong answer."""
    return tuple(
        (
            tuple(type(layer).__name__ for layer in getattr(model, "layers", ())),
            tuple((tuple(w.shape), str(w.dtype)) for w in model.weights),
        )
        for model in models
    )


def timed_pairs(
    first: Callable[[np.ndarray], object],
    second: Callable[[np.ndarray], object],
    x: np.ndarray,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[float], list[float]]:
    """Seconds per call of each, taken in alternating pairs (so drift on a shared machine hits both
    alike): MAX_PAIRS pairs, or fewer once BUDGET_S is spent, never under MIN_PAIRS. Both are assumed
    called once already (the trace or compile is not a call's time); the first pair is not counted either:
    right after its compile each form's next call was still 1.2-2.3x its later ones (digits, every bucket)."""
    times_first: list[float] = []
    times_second: list[float] = []
    start = clock()
    while len(times_first) <= MAX_PAIRS and (len(times_first) <= MIN_PAIRS or clock() - start < BUDGET_S):
        for fn, times in ((first, times_first), (second, times_second)):
            t = clock()
            fn(x)
            times.append(clock() - t)
    return times_first[1:], times_second[1:]


def second_is_faster(times_first: list[float], times_second: list[float], margin: float = MARGIN) -> bool:
    """The second form's median call is below the first's by more than the margin."""
    return statistics.median(times_second) < (1.0 - margin) * statistics.median(times_first)
