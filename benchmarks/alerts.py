"""The change detectors on streams made from the demo detector: their ARL and their delays.

    python -m benchmarks.alerts [--seeds 10] [--quick]

Streams: the demo detector (digits CNN + AE, the demo recipe, trained or cached like `make demo`) scores its
held-out clean digits and their blurred, noisy and FGSM versions once; a stream at 200 instances/s draws each
instance from the clean pool, or with the incident's share from a corrupted pool, in batches of 50 (one summary
each, as the replicas send them, four a second). Each run warms up on monitoring.baseline_instances clean
instances (5 minutes), watches 10 clean minutes (a false alarm there is counted), then the incident: sudden
shares of 2-50 % of each kind, ramps 0 -> 20 % over 2 hours, a 5 % FGSM burst of 10 minutes. The charts are
the service's own (changes/charts.py, the shipped config: one false alarm per 30 days per detector).

Prints: the set's exact ARL (1 / the sum of its charts' false alarms per instance, in days at 200/s), and per
scenario the share of runs detected within 30 minutes (2 h 30 min for ramps) and the delay's median and p90.
Instances within a request are drawn independently here; the demo's requests of 8 same-kind instances are not
(README, "Change detection", says what that does to the false-alarm rate).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RATE = 200.0
BATCH = 50
CLEAN_WATCH_S = 600.0


def pools(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per kind: (flag, score, undefended class) of every pool instance."""
    from adae_stream.config import DemoConfig
    from adae_stream.demo.detector_cache import load_or_train, traffic_pools

    d = DemoConfig()
    detector, _, _ = load_or_train(d.cache_dir, d.epochs, seed)
    out = {}
    for kind, (x, _y) in traffic_pools(detector, seed).items():
        if kind not in ("clean", "blur", "noise", "fgsm"):
            continue
        scores, p, _q = detector.score(x, return_predictions=True)
        out[kind] = (scores > detector.threshold, scores, np.argmax(p, axis=1))
    return out


def run(pool, reference, kind: str, share_at, length_s: float, seed: int, cfg) -> tuple[float | None, int]:
    """One stream: (seconds from the incident's start to the first alarm or None, false alarms before it)."""
    from adae_stream.changes.charts import ChartSet
    from adae_stream.feedback.summaries import reference_edges

    rng = np.random.default_rng(seed)
    m = cfg.monitoring
    cs = ChartSet(
        ("d", "1", "serving"),
        m.false_alarm_every,
        m.baseline_instances,
        m.baseline_confidence,
        m.odds_ratios,
        m.min_rate,
    )
    low, high = reference_edges(reference)
    clean, bad = pool["clean"], pool[kind]
    dt = BATCH / RATE
    t, incident_t, false_alarms = 0.0, None, 0
    while True:
        t += dt
        if not cs.ready:
            share = 0.0
        else:
            if incident_t is None:
                incident_t = t + CLEAN_WATCH_S
            since = t - incident_t
            if since > length_s:
                return None, false_alarms
            share = share_at(since) if since >= 0 else 0.0
        corrupted = rng.random(BATCH) < share
        idx_c = rng.integers(0, len(clean[0]), BATCH)
        idx_b = rng.integers(0, len(bad[0]), BATCH)
        flags = np.where(corrupted, bad[0][idx_b], clean[0][idx_c])
        scores = np.where(corrupted, bad[1][idx_b], clean[1][idx_c])
        classes = np.where(corrupted, bad[2][idx_b], clean[2][idx_c])
        counts = {
            "flags/flagged": int(flags.sum()),
            "score/high": int((scores > high).sum()),
            "score/low": int((scores < low).sum()),
        }
        labels, n = np.unique(classes, return_counts=True)
        counts.update({f"classes/{c}": int(k) for c, k in zip(labels, n, strict=True)})
        fired = cs.add(counts, BATCH, t)
        if fired:
            if incident_t is None or t < incident_t:
                false_alarms += 1
                continue
            return t - incident_t, false_alarms


def main(argv: list[str] | None = None) -> int:
    from adae_stream.config import load_config
    from adae_stream.demo.detector_cache import load_or_train

    ap = argparse.ArgumentParser(prog="python -m benchmarks.alerts")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="3 seeds, fewer scenarios")
    args = ap.parse_args(argv)
    seeds = 3 if args.quick else args.seeds
    cfg = load_config(None, environ={})
    t0 = time.time()
    pool = pools(0)
    detector, _, _ = load_or_train(cfg.demo.cache_dir, cfg.demo.epochs, 0)
    reference = np.asarray(detector.reference_scores)
    rates = {k: float(v[0].mean()) for k, v in pool.items()}
    print(f"flag rates of the pools: {', '.join(f'{k} {v:.3f}' for k, v in rates.items())} ({time.time() - t0:.0f} s)")

    # the set's exact ARL from one warm-up (its charts' false alarms per instance add up)
    from adae_stream.changes.charts import ChartSet

    m = cfg.monitoring
    cs = ChartSet(
        ("d", "1", "serving"),
        m.false_alarm_every,
        m.baseline_instances,
        m.baseline_confidence,
        m.odds_ratios,
        m.min_rate,
    )
    rng = np.random.default_rng(0)
    clean = pool["clean"]
    low, high = np.quantile(reference, (0.25, 0.75))
    t = 0.0
    while not cs.ready:
        t += BATCH / RATE
        i = rng.integers(0, len(clean[0]), BATCH)
        counts = {
            "flags/flagged": int(clean[0][i].sum()),
            "score/high": int((clean[1][i] > high).sum()),
            "score/low": int((clean[1][i] < low).sum()),
        }
        labels, n = np.unique(clean[2][i], return_counts=True)
        counts.update({f"classes/{c}": int(k) for c, k in zip(labels, n, strict=True)})
        cs.add(counts, BATCH, t)
    per_item = sum(1 / c.design.arl for c in cs.charts.values())
    flags_per_item = sum(1 / c.design.arl for (e, _), c in cs.charts.items() if e.startswith("flags"))
    print(
        f"ARL of the whole set (exact, {len(cs.charts)} charts at the rates designed for): "
        f"{1 / per_item / RATE / 86400:.1f} days at {RATE:.0f}/s; the flags charts alone "
        f"{1 / flags_per_item / RATE / 86400:.1f} days"
    )
    scenarios = [("clean for 6 h (any alarm is false)", "blur", lambda since: 0.0, 6 * 3600.0)]
    shares = (0.02, 0.05, 0.1, 0.2, 0.5) if not args.quick else (0.05, 0.1, 0.2)
    for kind in ("blur", "noise"):
        for s in shares:
            scenarios.append((f"{kind} {s:.0%} sudden", kind, (lambda since, s=s: s), 1800.0))
    scenarios.append(("fgsm 5% sudden", "fgsm", lambda since: 0.05, 1800.0))
    scenarios.append(("fgsm 5% burst of 10 min", "fgsm", lambda since: 0.05 if since < 600 else 0.0, 1800.0))
    for kind in ("blur", "noise"):
        scenarios.append((f"{kind} ramp 0 -> 20 % over 2 h", kind, lambda since: 0.2 * min(1.0, since / 7200), 9000.0))
    print(f"\n{'scenario':<36} {'detected':>9} {'median':>9} {'p90':>9} {'false alarms in 10 clean min':>30}")
    for name, kind, share_at, length in scenarios:
        delays, false = [], 0
        for seed in range(seeds):
            delay, fa = run(pool, reference, kind, share_at, length, 1000 + seed, cfg)
            false += fa
            delays.append(np.inf if delay is None else delay)
        d = np.array(delays)
        found = np.isfinite(d)
        med = np.median(d)
        p90 = np.quantile(d, 0.9)
        fmt = lambda x: "missed" if not np.isfinite(x) else (f"{x:.0f} s" if x < 120 else f"{x / 60:.1f} min")  # noqa: E731
        print(f"{name:<36} {found.sum():>4}/{len(d):<4} {fmt(med):>9} {fmt(p90):>9} {false:>30}")
    print(f"\n({time.time() - t0:.0f} s; `python -m benchmarks.alerts --seeds {seeds}`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
