"""Many detectors, measured: p99 latency across hot swaps against steady state, 4 detectors against 1 at
the same total traffic, the shadow's cost, and resident memory per loaded detector and over 20 swaps.

    python -m benchmarks.repository            # about 4 minutes on 2 cores
    python -m benchmarks.repository --quick
    python -m benchmarks.repository --swap-only [--broker apache-kafka] [--jit-compile false]

Everything runs in this process against the embedded broker, with the load generator in its own
process (benchmarks/e2e.py). Every comparison is a ratio of two figures measured in the same run.
The tabular model is used: its detector loads and traces in about a second, so a swap's background
work is visible against a scoring cost of microseconds per instance.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from adae_stream.scoring import buckets_up_to

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MAX_BATCH = 256
BUCKETS = buckets_up_to(MAX_BATCH)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


JIT_COMPILE: bool | str | None = None  # --jit-compile: detector.jit_compile for every version loaded, else the default


def _config(bootstrap: str, root: Path):
    """The end-to-end benchmark's settings, over a repository instead of one detector."""
    from benchmarks.e2e import _config as e2e_config

    cfg = e2e_config(bootstrap, "", MAX_BATCH, 5, BUCKETS)
    cfg.detector.path, cfg.detector.repository = None, str(root)
    if JIT_COMPILE is not None:
        cfg.detector.jit_compile = JIT_COMPILE
    return cfg


def _repository(cfg, root: Path):
    from adae_stream.detector.repository import DetectorRepository
    from adae_stream.runner import load_scorer

    repo = DetectorRepository(root, lambda path: load_scorer(cfg, path))
    repo.refresh()
    repo.changed()
    return repo


def _fill(root: Path, det, names: list[str], shadow: bool = False) -> None:
    from adae_stream import save_detector

    for name in names:
        save_detector(det, root / name / "1")
        if shadow:
            save_detector(det, root / name / "2")
            (root / name / "policy.yaml").write_text("serve: 1\nshadow: 2\n")


def _run(bootstrap: str, root: Path, body, before=None):
    """A pipeline over the repository at root, joined and warm; ``before(cfg)`` runs before it starts,
    ``body(cfg, repo, requests, answers, t_ready)`` measures while it runs."""
    from adae_stream.clients.build import ensure_topics
    from adae_stream.stream.app import Pipeline
    from benchmarks.e2e import TopicReader

    cfg = _config(bootstrap, root)
    ensure_topics(cfg, bootstrap)
    if before is not None:
        before(cfg)
    repo = _repository(cfg, root)
    pipeline = Pipeline(cfg, repo, None, bootstrap)
    thread = threading.Thread(target=pipeline.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not pipeline.ready and time.monotonic() < deadline:
        time.sleep(0.001)  # the throughput clock starts here: consumption begins once partitions are assigned
    t_ready = time.time()
    try:
        requests = TopicReader(bootstrap, cfg.kafka.input_topic)
        answers = TopicReader(bootstrap, cfg.kafka.output_topic)
        result = body(cfg, repo, requests, answers, t_ready)
        return {**result, "batches": pipeline.stats["batches"]}
    finally:
        pipeline.stop()
        thread.join(60)


def throughput(bootstrap: str, det, x: np.ndarray, k: int, n_requests: int, per_request: int, shadow: bool) -> dict:
    """Pre-produced requests spread over k detectors (routed by header): instances/s from the moment the
    pipeline holds its partitions to the last answer (broker timestamps)."""
    from benchmarks.e2e import _offer

    root = Path(tempfile.mkdtemp(prefix="adae-repo-"))
    models = tuple(f"m{i}" for i in range(k))
    _fill(root, det, list(models), shadow)
    sent: list[int] = []

    def before(cfg) -> None:  # as fast as the generator goes: the backlog is there before the pipeline starts
        sent.append(
            _offer(bootstrap, cfg.kafka.input_topic, x, per_request, 50_000.0, n_requests / 50_000.0, "tp", models)
        )

    def body(cfg, repo, requests, answers, t_ready):
        got = answers.wait(sent[0], 300)
        span = (max(got.values()) - t_ready * 1000) / 1000
        return {"detectors": k, "shadow": shadow, "requests": len(got), "inst_per_s": len(got) * per_request / span}

    try:
        return _run(bootstrap, root, body, before)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def swap_latency(
    bootstrap: str, det, x: np.ndarray, rate_rps: float, seconds: float, swaps: int, retime: bool = False
) -> dict:
    """The same offered load twice: steady, then with ``swaps`` new versions taken during it. ``retime``:
    each version's warm-up times its compiled forms again (jit_compile auto), as before versions of one
    architecture took the choice timed first (detector/compile_choice.py)."""
    from adae_stream import save_detector
    from adae_stream.detector import compile_choice
    from benchmarks.e2e import WARMUP_S, _offer, _step

    root = Path(tempfile.mkdtemp(prefix="adae-repo-"))
    staged = Path(tempfile.mkdtemp(prefix="adae-staged-"))
    _fill(root, det, ["m0"])
    for version in range(2, swaps + 2):  # saved before the clock starts: saving is the trainer's cost, not ours
        save_detector(det, staged / str(version))
    per_request = 8

    def body(cfg, repo, requests, answers, t_ready):
        topic = cfg.kafka.input_topic
        warm = _offer(bootstrap, topic, x, per_request, rate_rps, WARMUP_S, "warm", ("m0",))
        answers.wait(warm, 60)
        n = _offer(bootstrap, topic, x, per_request, rate_rps, seconds, "steady", ("m0",))
        steady = _step(requests.wait(warm + n, 60), answers.wait(warm + n, 60), "steady", n)["latency_ms"]
        swap_times: list[tuple[float, float]] = []

        def swapper() -> None:
            time.sleep(seconds / (swaps + 1))
            for version in range(2, swaps + 2):
                t0 = time.time() * 1000
                # a version arrives whole, as a sync or a trainer elsewhere delivers it (a rename), then the
                # watcher's work: load, warm up, publish; the loop takes it at its next batch boundary
                os.replace(staged / str(version), root / "m0" / str(version))
                if retime:
                    compile_choice.REMEMBERED.clear()
                repo.refresh()
                shutil.rmtree(root / "m0" / str(version - 1))
                swap_times.append((t0, time.time() * 1000))
                time.sleep(seconds / (swaps + 1))

        gc.collect()
        rss_before = rss_mb()
        t = threading.Thread(target=swapper, daemon=True)
        t.start()
        m = _offer(bootstrap, topic, x, per_request, rate_rps, seconds, "swap", ("m0",))
        t.join(120)
        got_req, got_ans = requests.wait(warm + n + m, 60), answers.wait(warm + n + m, 60)
        during = _step(got_req, got_ans, "swap", m)["latency_ms"]
        near = [
            got_ans[k] - got_req[k]
            for i in range(m)
            if (k := f"swap-{i}".encode()) in got_ans and any(a - 500 <= got_req[k] <= b + 500 for a, b in swap_times)
        ]
        gc.collect()
        return {
            "rate_rps": rate_rps,
            "per_request": per_request,
            "swaps": len(swap_times),
            "rss_before_swaps_mb": rss_before,
            "rss_after_swaps_mb": rss_mb(),  # the running pipeline (its loop froze what was alive at start)
            "swap_s": [round((b - a) / 1000, 2) for a, b in swap_times],
            "steady_p50_ms": float(np.percentile(steady, 50)),
            "steady_p99_ms": float(np.percentile(steady, 99)),
            "swap_run_p99_ms": float(np.percentile(during, 99)),
            "near_swap_requests": len(near),
            "near_swap_p99_ms": float(np.percentile(near, 99)) if near else float("nan"),
        }

    try:
        return _run(bootstrap, root, body)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(staged, ignore_errors=True)


def memory(det, counts: tuple[int, ...], swaps: int) -> dict:
    """RSS after loading k detectors, and after each of ``swaps`` successive new versions of one."""
    from adae_stream import save_detector
    from adae_stream.config import load_config

    cfg = load_config(None, environ={}, overrides={"batching": {"max_batch_size": MAX_BATCH, "bucket_sizes": BUCKETS}})
    out: dict = {"loaded": []}
    gc.collect()
    base = rss_mb()
    for k in counts:
        root = Path(tempfile.mkdtemp(prefix="adae-repo-"))
        _fill(root, det, [f"m{i}" for i in range(k)])
        repo = _repository(cfg, root)
        gc.collect()
        out["loaded"].append({"detectors": k, "rss_mb": rss_mb(), "above_start_mb": rss_mb() - base})
        del repo
        gc.collect()
        shutil.rmtree(root, ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix="adae-repo-"))
    _fill(root, det, ["m0"])
    repo = _repository(cfg, root)
    trace = []
    for version in range(2, swaps + 2):
        save_detector(det, root / "m0" / str(version))
        repo.refresh()
        shutil.rmtree(root / "m0" / str(version - 1))
        gc.collect()
        trace.append(rss_mb())
    shutil.rmtree(root, ignore_errors=True)
    out["swaps_rss_mb"] = [round(v, 1) for v in trace]
    out["growth_first5_to_last5_mb"] = float(np.mean(trace[-5:]) - np.mean(trace[:5]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.repository")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--swap-only", action="store_true", help="only the p99 across hot swaps")
    ap.add_argument("--broker", choices=("tansu", "apache-kafka"), default="tansu")
    ap.add_argument("--jit-compile", choices=("auto", "true", "false"), help="detector.jit_compile (default: shipped)")
    ap.add_argument("--retime", action="store_true", help="auto: each swapped version timed again, not remembered")
    args = ap.parse_args(argv)
    global JIT_COMPILE
    if args.jit_compile is not None:
        JIT_COMPILE = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    import platform

    import tensorflow as tf

    from adae_stream.stream.broker import EmbeddedBroker
    from benchmarks.models import tabular
    from tests.apache_kafka import ApacheKafka

    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, TF {tf.__version__}")
    det, x = tabular()
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if not (args.skip_memory or args.swap_only):
        results["memory"] = memory(det, (1, 2, 4, 8), 20)
        print(json.dumps(results["memory"]))
    jvm = ("-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-XX:-UsePerfData", "-Djava.awt.headless=true")
    with EmbeddedBroker() if args.broker == "tansu" else ApacheKafka(jvm_opts=jvm) as broker:
        n = 4000 if args.quick else 12000
        variants = ((1, False), (4, False), (1, True))
        rows = []
        # the variants take turns, so a slow stretch hits each alike
        for _ in range(0 if args.swap_only else 1 if args.quick else 3):
            rows += [throughput(broker.bootstrap, det, x, k, n, 8, shadow) for k, shadow in variants]

        def best(k: int, shadow: bool) -> dict:
            same = [r for r in rows if (r["detectors"], r["shadow"]) == (k, shadow)]
            return max(same, key=lambda r: r["inst_per_s"])

        if rows:
            one, four, shadowed = (best(k, shadow) for k, shadow in variants)
            results["throughput"] = {
                "rows": rows,
                "four_vs_one": four["inst_per_s"] / one["inst_per_s"],
                "shadow_vs_none": shadowed["inst_per_s"] / one["inst_per_s"],
            }
            print(json.dumps(results["throughput"]))
        swap = swap_latency(
            broker.bootstrap, det, x, 200.0, 8.0 if args.quick else 20.0, 3 if args.quick else 6, args.retime
        )
        swap["swap_run_vs_steady_p99"] = swap["swap_run_p99_ms"] / swap["steady_p99_ms"]
        swap["near_swap_vs_steady_p99"] = swap["near_swap_p99_ms"] / swap["steady_p99_ms"]
        results["swap"] = swap
        print(json.dumps(swap))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
