"""Decode and encode cost per request, by wire family, with no broker and no detector.

    python -m benchmarks.codecs                 # this checkout
    python -m benchmarks.codecs --against DIR   # and another checkout (e.g. a git worktree), alternately

One request of 64 instances x 20 features, the answer of every result field. Each figure is the best
of 5 rounds of 2,000 calls (the least disturbed by the machine's noise). With --against the two
checkouts run in turn, 3 times each, in separate processes, and the ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

FORMATS = ("npy", "proto", "triton", "v2")


def measure(rounds: int = 5, calls: int = 2000) -> dict[str, dict[str, float]]:
    import numpy as np

    from adae_stream.codecs import RESULT_DTYPES, RawRecord, decode, encode, encode_request
    from tests.answer_info import ANSWER_INFO  # who answered: the codecs' info, as the tests build it

    x = np.random.default_rng(0).normal(size=(64, 20)).astype(np.float32)
    result = {k: np.zeros(64, dtype=v) for k, v in RESULT_DTYPES.items()}
    out: dict[str, dict[str, float]] = {}
    for fmt in FORMATS:
        value, headers = encode_request(x, fmt, "r1")
        record = RawRecord("in", 0, 1, None, value, headers)
        request = decode(record, (20,), 1 << 20)
        best = {"decode_us": float("inf"), "encode_us": float("inf")}
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(calls):
                decode(record, (20,), 1 << 20)
            best["decode_us"] = min(best["decode_us"], (time.perf_counter() - t) / calls * 1e6)
            t = time.perf_counter()
            for _ in range(calls):
                encode(request, result, ANSWER_INFO)
            best["encode_us"] = min(best["encode_us"], (time.perf_counter() - t) / calls * 1e6)
        out[fmt] = best
    return out


def _in_checkout(root: Path) -> dict[str, dict[str, float]]:
    """measure() in a fresh process that imports adae_stream from ``root`` (this file is loaded by path,
    so a checkout older than it can be measured too)."""
    code = (
        f"import sys, json, importlib.util as u; sys.path.insert(0, {str(root)!r}); "
        f"s = u.spec_from_file_location('codec_bench', {str(Path(__file__).resolve())!r}); "
        "m = u.module_from_spec(s); s.loader.exec_module(m); print(json.dumps(m.measure()))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.codecs")
    ap.add_argument("--against", type=Path, help="another checkout to compare with, run alternately")
    args = ap.parse_args(argv)
    here = Path(__file__).resolve().parents[1]
    if args.against is None:
        for fmt, figures in measure().items():
            print(f"{fmt:7s} decode {figures['decode_us']:6.1f} us  encode {figures['encode_us']:6.1f} us")
        return 0
    runs: dict[str, list[dict]] = {"this": [], "other": []}
    for _ in range(3):
        runs["this"].append(_in_checkout(here))
        runs["other"].append(_in_checkout(args.against.resolve()))
    for fmt in FORMATS:
        cells = []
        for stage in ("decode_us", "encode_us"):
            this = statistics.median(r[fmt][stage] for r in runs["this"])
            other = statistics.median(r[fmt][stage] for r in runs["other"])
            cells.append(f"{stage[:6]} {this:6.1f} vs {other:6.1f} us ({this / other:.2f}x)")
        print(f"{fmt:7s} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
