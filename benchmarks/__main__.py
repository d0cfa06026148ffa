"""Run the whole benchmark suite and print every figure with the ratios asked for in one run.

    python -m benchmarks            # full (about 8 minutes on 2 cores)
    python -m benchmarks --quick    # smaller counts
    python -m benchmarks --soak 600 # RSS over a 10-minute soak (tabular JSON at a steady rate)

Sections: (1)-(3) compute, (4) end to end, (5) the Kafka client alone, then on a fresh broker the
saturating load with a live load generator and the added latency at fractions of it.
`python -m benchmarks.load_curve` draws latency against load for the shipped and the previous defaults
(issue 40); `python -m benchmarks.stages` splits one load point's latency by stage; `python -m benchmarks.formats`
compares the wire families end to end and `python -m benchmarks.codecs` their decode and encode
alone; `python -m benchmarks.precision` measures mixed precision; `python -m benchmarks.compile_choice`
compares TF's graph, XLA and `jit_compile: auto` per model and batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--soak", type=float, default=0.0, help="also run an RSS soak for this many seconds")
    ap.add_argument("--json", help="write all figures to this file")
    ap.add_argument(
        "--latency-repeats",
        type=int,
        default=None,
        help="runs of the half-load latency point (default 3, 1 with --quick)",
    )
    args = ap.parse_args(argv)

    import tensorflow as tf

    from adae_stream import save_detector
    from adae_stream.stream.broker import EmbeddedBroker
    from benchmarks import compute, e2e
    from benchmarks.models import BATCHING, cifar, tabular
    from benchmarks.soak import rss_mb

    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}, TF "
        f"{tf.__version__}, "
        f"devices {[d.name for d in tf.config.list_logical_devices()]}"
    )
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick}
    models = {"tabular": tabular(), "cifar": cifar()}

    print("\n(1)(2)(3) compute floor, reference way, correct() [instances/s]")
    results["compute"] = compute.run_compute(models, batches=(1, 32, 256, 1024), min_time_s=0.6 if args.quick else 1.5)
    floor = {(r["model"], r["batch"]): r["floor"] for r in results["compute"]["rows"]}

    tmp = tempfile.mkdtemp(prefix="adae-bench-")
    paths = {name: str(save_detector(det, f"{tmp}/{name}")) for name, (det, _) in models.items()}
    n_tab = 600 if args.quick else 5000  # 5000 x 64 instances: long enough that start-up is a small share
    n_cif = 60 if args.quick else 200
    with EmbeddedBroker() as broker:
        print("\n(4) end to end through the embedded broker")
        tab_det, tab_x = models["tabular"]
        cif_det, cif_x = models["cifar"]
        tab_batch, cif_batch = BATCHING["tabular"], BATCHING["cifar"]
        e = [
            (
                "tabular",
                "v2",
                e2e.end_to_end(broker.bootstrap, tab_det, paths["tabular"], tab_x, "v2", 64, n_tab, *tab_batch),
            ),
            (
                "tabular",
                "npy",
                e2e.end_to_end(broker.bootstrap, tab_det, paths["tabular"], tab_x, "npy", 64, n_tab, *tab_batch),
            ),
            (
                "tabular",
                "npy",
                e2e.end_to_end(broker.bootstrap, tab_det, paths["tabular"], tab_x, "npy", 64, n_tab, *cif_batch),
            ),
            (
                "cifar",
                "npy",
                e2e.end_to_end(broker.bootstrap, cif_det, paths["cifar"], cif_x, "npy", 32, n_cif, *cif_batch),
            ),
            (
                "cifar",
                "v2",
                e2e.end_to_end(broker.bootstrap, cif_det, paths["cifar"], cif_x, "v2", 32, n_cif // 2, *cif_batch),
            ),
        ]
        results["e2e"] = []
        for model, fmt, r in e:
            r["model"] = model
            r["e2e/floor"] = r["inst_per_s"] / floor[(model, r["max_batch_size"])]
            results["e2e"].append(r)
            print(
                f"  {model:8s} {fmt:4s} max batch {r['max_batch_size']:4d}: {r['inst_per_s']:10.0f} instances/s "
                f"({r['MB_per_s']:.1f} MB/s in, "
                f"{r['answered']}/{r['requests']} answered, {r['batches']} batches)  e2e/floor(at max batch) "
                f"{r['e2e/floor']:.2f}"
            )

        print("\n(4b) end to end by wire family: protobuf and Triton binary against npy, same batching")
        from benchmarks import formats

        results["formats"] = formats.run(
            broker.bootstrap, models, paths, {"tabular": n_tab // 2, "cifar": n_cif // 2}, 1 if args.quick else 2
        )

        print("\n(5) Kafka client alone (produce + consume the same records, no scoring)")
        results["kafka_alone"] = []
        for model, fmt, per, n in [
            ("tabular", "v2", 64, n_tab),
            ("tabular", "npy", 64, n_tab),
            ("cifar", "npy", 32, n_cif),
        ]:
            x = models[model][1]
            r = e2e.kafka_alone(broker.bootstrap, x, fmt, per, n)
            r["model"] = model
            mine = next(x for x in results["e2e"] if x["model"] == model and x["format"] == fmt)
            r["e2e/kafka"] = mine["inst_per_s"] / r["instances_per_s"]
            results["kafka_alone"].append(r)
            print(f"  {model:8s} {fmt:4s}: {r['instances_per_s']:10.0f} instances/s  e2e/kafka {r['e2e/kafka']:.2f}")

        broker_rss = rss_mb(broker.pid)

    # A fresh broker for the live runs, so they do not depend on what the runs above left in the
    # memory-only broker (~1.5 GB). Checked once: pipeline p99 at 183 req/s was 157 ms on a broker
    # holding 1.58 GB and 21 ms on a fresh one (at 1,830 req/s: 50 vs 60 ms, within noise).
    print(f"\n(the broker held {broker_rss:.0f} MB after the runs above; the live runs below use a fresh one)")
    with EmbeddedBroker() as broker:
        print(
            "\nsaturating load with a live load generator on the same machine (tabular npy, 64 instances per request)"
        )
        sat = e2e.live_saturation(
            broker.bootstrap, tab_det, paths["tabular"], tab_x, 64, *tab_batch, seconds=3 if args.quick else 4
        )
        results["live_saturation"] = sat
        for st in sat["steps"]:
            verdict = "kept up" if st["kept_up"] and not st["generator_limited"] else "fell behind"
            if st["generator_limited"]:
                verdict = "generator-limited"
            print(
                f"  asked {st['asked_rps']:6.0f} req/s: offered {st['offered_rps']:6.0f}, answered at "
                f"{st['answered_rps']:6.0f} req/s "
                f"({st['answered']}/{st['sent']}), p50 {st['p50_ms']:.0f} ms p99 {st['p99_ms']:.0f} ms: "
                f"{verdict}"
            )
        pre = next(x for x in results["e2e"] if x["model"] == "tabular" and x["format"] == "npy")["inst_per_s"] / 64
        print(f"  saturating load: {sat['saturation_rps']:.0f} req/s live (pre-produced: {pre:.0f} req/s)")

        print(
            "\nadded latency vs the pass-through loop at fixed fractions of the live saturating load (tabular npy, 64 "
            "instances per request)"
        )
        results["latency"] = []
        repeats = args.latency_repeats or (1 if args.quick else 3)
        for frac in (0.25, 0.5) if args.quick else (0.05, 0.25, 0.5):
            rate = max(5.0, frac * sat["saturation_rps"])
            for _ in range(repeats if frac == 0.5 else 1):
                r = e2e.latency(
                    broker.bootstrap, tab_det, paths["tabular"], tab_x, 64, rate, 5 if args.quick else 10, *tab_batch
                )
                r["fraction_of_saturation"] = frac
                results["latency"].append(r)
                print(
                    f"  {frac:4.0%} of saturation, {rate:6.0f} req/s ({rate * 64:7.0f} instances/s): pipeline p50 "
                    f"{r['p50_ms']:6.1f} ms p99 {r['p99_ms']:6.1f} ms; "
                    f"pass-through p50 {r['passthrough_p50_ms']:5.1f} p99 {r['passthrough_p99_ms']:5.1f}; added p50 "
                    f"{r['added_p50_ms']:6.1f} p99 {r['added_p99_ms']:6.1f} "
                    f"(target added p99 <= {r['max_batch_delay_ms']:.0f} + 2 x {r['batch_compute_ms']:.2f} = "
                    f"{r['target_added_p99_ms']:.1f} ms)",
                    flush=True,
                )

        if args.soak:
            from benchmarks.soak import soak

            print(f"\nsoak: {args.soak:.0f} s of steady tabular V2 traffic, RSS of the pipeline process")
            results["soak"] = soak(broker.bootstrap, paths["tabular"], tab_x, args.soak)
            s = results["soak"]
            print(
                f"  RSS start {s['rss_start_mb']:.0f} MB -> end {s['rss_end_mb']:.0f} MB (max {s['rss_max_mb']:.0f} "
                f"MB), {s['answered']}/{s['requests']} answered"
            )

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
