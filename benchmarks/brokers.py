"""End to end on both brokers: the pipeline against the Kafka-alone pass-through on the same broker.

    python -m benchmarks.brokers            # tabular and CIFAR-shaped, npy and JSON, 2 rounds
    python -m benchmarks.brokers --quick

Tansu (embedded) and Apache Kafka (the pinned test broker, tests/apache_kafka) run side by side in
this process's lifetime: each round measures every case on each broker in turn, so the ratios compare
runs made under the same machine load. e2e/kafka is the pipeline's instances/s over the pass-through's
on the same broker: what scoring and the service cost beyond moving the bytes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CASES = (("tabular", "npy", 64), ("tabular", "v2", 64), ("cifar", "npy", 32), ("cifar", "v2", 32))


def run(brokers: dict[str, str], models: dict, paths: dict, n_requests: dict[str, int], rounds: int) -> dict:
    from benchmarks import e2e
    from benchmarks.models import BATCHING

    runs: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for _ in range(rounds):
        for model, fmt, per in CASES:
            det, x = models[model]
            n = n_requests[model] // (2 if fmt == "v2" else 1)
            for name, bootstrap in brokers.items():
                r = e2e.end_to_end(bootstrap, det, paths[model], x, fmt, per, n, *BATCHING[model])
                assert r["answered"] == r["requests"], (name, r)
                alone = e2e.kafka_alone(bootstrap, x, fmt, per, n)
                cell = runs.setdefault((name, model, fmt), {"e2e": [], "kafka": []})
                cell["e2e"].append(r["inst_per_s"])
                cell["kafka"].append(alone["instances_per_s"])
    out = []
    for (name, model, fmt), cell in runs.items():
        e2e_med, kafka_med = statistics.median(cell["e2e"]), statistics.median(cell["kafka"])
        row = {"broker": name, "model": model, "format": fmt, "e2e": e2e_med, "kafka": kafka_med}
        row["e2e/kafka"] = e2e_med / kafka_med
        out.append(row)
        print(
            f"  {name:12s} {model:8s} {fmt:4s}: e2e {e2e_med:10,.0f}  kafka alone {kafka_med:10,.0f} "
            f"instances/s  e2e/kafka {row['e2e/kafka']:.2f}"
        )
    for model, fmt, _ in CASES:
        by = {r["broker"]: r for r in out if r["model"] == model and r["format"] == fmt}
        if len(by) == 2:
            a, t = by["apache-kafka"], by["tansu"]
            print(
                f"  {model:8s} {fmt:4s}: Apache Kafka / Tansu  e2e {a['e2e'] / t['e2e']:.2f}, "
                f"kafka alone {a['kafka'] / t['kafka']:.2f}"
            )
    return {"rows": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.brokers")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)

    from adae_stream import save_detector
    from adae_stream.stream.broker import EmbeddedBroker
    from benchmarks.models import cifar, tabular
    from tests.apache_kafka import ApacheKafka, kafka_version

    models = {"tabular": tabular(), "cifar": cifar()}
    tmp = tempfile.mkdtemp(prefix="adae-brokers-")
    paths = {name: str(save_detector(det, f"{tmp}/{name}")) for name, (det, _) in models.items()}
    n = {"tabular": 600, "cifar": 60} if args.quick else {"tabular": 2000, "cifar": 120}
    # the broker's JVM with its default JIT (the tests' node is sized for start-up, not throughput)
    jvm = ("-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-XX:-UsePerfData", "-Djava.awt.headless=true")
    with EmbeddedBroker() as tansu, ApacheKafka(jvm_opts=jvm) as kafka:
        print(f"end to end on Tansu and Apache Kafka {kafka_version()} (pre-produced requests, first to last answer)")
        run({"tansu": tansu.bootstrap, "apache-kafka": kafka.bootstrap}, models, paths, n, args.rounds or 2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
