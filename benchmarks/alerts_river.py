"""river's PageHinkley on the flag stream, at a false-alarm rate set by simulation: the library detector of
`python -m benchmarks.alerts --library`. Runs in its own environment (numpy and river only):

    python3 -m venv .venv-river && .venv-river/bin/pip install river numpy
    .venv-river/bin/python benchmarks/alerts_river.py POOLS.npz SCENARIOS.json ARL_INSTANCES SEEDS

river states no false-alarm rate, so its threshold is calibrated here: the smallest threshold (a bisection in
log scale) whose mean run length on clean streams, over CALIBRATION_RUNS runs, reaches ARL_INSTANCES. Then the
same scenarios as benchmarks.alerts (the same warm-up and clean watch, the same shares), per instance. Prints
one JSON object: the threshold, the calibrated ARL, and per scenario the delays (None: missed).
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

RATE = 200.0
CALIBRATION_RUNS = 12


def shares(spec: list, since: np.ndarray) -> np.ndarray:
    """The incident's share at each instance (seconds since its start; before it, 0)."""
    kind, share, duration = spec
    on = since >= 0
    if kind == "sudden":
        return np.where(on, share, 0.0)
    if kind == "burst":
        return np.where(on & (since < duration), share, 0.0)
    return np.where(on, share * np.clip(since / duration, 0.0, 1.0), 0.0)  # ramp


def run_length(threshold: float, clean: np.ndarray, cap: int, rng: np.random.Generator) -> int:
    from river.drift import PageHinkley

    ph = PageHinkley(threshold=threshold, mode="up")
    chunk = 100_000
    n = 0
    while n < cap:
        for v in clean[rng.integers(0, len(clean), chunk)]:
            n += 1
            ph.update(float(v))
            if ph.drift_detected:
                return n
    return cap


def calibrate(clean: np.ndarray, arl: float, rng: np.random.Generator) -> tuple[float, float]:
    lo, hi = 1.0, 200.0
    mean = 0.0
    for _ in range(10):
        mid = math.sqrt(lo * hi)
        mean = float(np.mean([run_length(mid, clean, int(4 * arl), rng) for _ in range(CALIBRATION_RUNS)]))
        lo, hi = (mid, hi) if mean < arl else (lo, mid)
    threshold = hi
    mean = float(np.mean([run_length(threshold, clean, int(4 * arl), rng) for _ in range(CALIBRATION_RUNS)]))
    return threshold, mean


def scenario(
    threshold: float, clean: np.ndarray, bad: np.ndarray, spec: list, length_s: float, warmup: int, rng
) -> tuple[float | None, int]:
    from river.drift import PageHinkley

    ph = PageHinkley(threshold=threshold, mode="up")
    watch = warmup + int(600 * RATE)  # the warm-up, then 10 clean minutes (alarms there are false)
    false = 0
    total = watch + int(length_s * RATE)
    for start in range(0, total, 10_000):
        n = min(10_000, total - start)
        take_bad = rng.random(n) < shares(spec, (start + np.arange(n) - watch) / RATE)
        values = np.where(take_bad, bad[rng.integers(0, len(bad), n)], clean[rng.integers(0, len(clean), n)])
        for i, v in enumerate(values):
            ph.update(float(v))
            if not ph.drift_detected or start + i < warmup:  # its own burn-in, as ours warms up
                continue
            if start + i < watch:
                false += 1
                continue
            return (start + i - watch) / RATE, false
    return None, false


def main() -> int:
    pools = np.load(sys.argv[1])
    scenarios = json.loads(open(sys.argv[2]).read())
    arl, seeds = float(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(0)
    clean = pools["clean"].astype(float)
    threshold, calibrated = calibrate(clean, arl, rng)
    out = {"threshold": threshold, "calibrated_arl": calibrated, "scenarios": {}}
    for name, kind, spec, length_s, warmup in scenarios:
        bad = pools[kind].astype(float)
        out["scenarios"][name] = [
            scenario(threshold, clean, bad, spec, length_s, warmup, np.random.default_rng(1000 + s))
            for s in range(seeds)
        ]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
