"""End to end by wire family: protobuf (raw contents) and Triton binary JSON against .npy, same model and batching.

    python -m benchmarks.formats            # tabular and CIFAR-shaped, 3 rounds
    python -m benchmarks.formats --quick

The families take turns round by round, each run on fresh topics, so the ratios compare runs made
under the same machine load (these 2-core machines are noisy). Target (issue #13): protobuf and Triton
binary within 0.9x of npy's instances/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FAMILIES = ("npy", "proto", "triton")


def run(bootstrap: str, models: dict, paths: dict, n_requests: dict[str, int], rounds: int) -> dict:
    from benchmarks import e2e
    from benchmarks.models import BATCHING

    per_request = {"tabular": 64, "cifar": 32}
    out: dict = {}
    for model in ("tabular", "cifar"):
        det, x = models[model]
        runs: dict[str, list[float]] = {f: [] for f in FAMILIES}
        for _ in range(rounds):
            for fmt in FAMILIES:
                r = e2e.end_to_end(
                    bootstrap, det, paths[model], x, fmt, per_request[model], n_requests[model], *BATCHING[model]
                )
                assert r["answered"] == r["requests"], r
                runs[fmt].append(r["inst_per_s"])
        med = {f: statistics.median(v) for f, v in runs.items()}
        out[model] = {
            "runs": runs,
            "median": med,
            "proto/npy": med["proto"] / med["npy"],
            "triton/npy": med["triton"] / med["npy"],
            "per_round_ratios": {
                f: [a / b for a, b in zip(runs[f], runs["npy"], strict=True)] for f in ("proto", "triton")
            },
        }
        print(
            f"  {model:8s} median instances/s: "
            + ", ".join(f"{f} {med[f]:,.0f}" for f in FAMILIES)
            + f"; proto/npy {out[model]['proto/npy']:.2f}, triton/npy {out[model]['triton/npy']:.2f}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.formats")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)

    from adae_stream import save_detector
    from adae_stream.stream.broker import EmbeddedBroker
    from benchmarks.models import cifar, tabular

    models = {"tabular": tabular(), "cifar": cifar()}
    tmp = tempfile.mkdtemp(prefix="adae-formats-")
    paths = {name: str(save_detector(det, f"{tmp}/{name}")) for name, (det, _) in models.items()}
    n = {"tabular": 600, "cifar": 60} if args.quick else {"tabular": 3000, "cifar": 150}
    with EmbeddedBroker() as broker:
        print("end to end by wire family (pre-produced requests, instances/s from first to last answer)")
        run(broker.bootstrap, models, paths, n, args.rounds or (1 if args.quick else 3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
