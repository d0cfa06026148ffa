"""End to end on JSON requests: the shipped codec (orjson, codecs/json_text.py) against the standard
library's json in its place, and the Kafka-alone pass-through (with the benchmarks' producer, and with the
service's acks=all and one request in flight), in alternating rounds on one broker.

    python -m benchmarks.json_codec [--broker apache-kafka|tansu] [--rounds 3] [--requests 2000]

The tabular model, V2 JSON requests of 64 and of 1 instance, pre-produced; instances/s from the
pipeline's start to its last answer (benchmarks/e2e.py). The standard library's variant patches
json_text's two functions in this process for its rounds, so both variants run the same code otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CASES = (64, 1)  # instances per request
# the pass-through twice: with the benchmarks' producer (acks=1, five in flight: benchmarks/e2e.py's Kafka
# alone) and with the service's delivery settings (acks=all, one in flight), the transport the service has
VARIANTS = ("orjson", "json", "pass-through", "pass-through, acks=all")


@contextlib.contextmanager
def standard_library_json() -> Iterator[None]:
    """json_text's loads and dumps as they were before orjson (every codec calls them through the module)."""
    from adae_stream.codecs import json_text

    saved = json_text.loads, json_text.dumps
    json_text.loads = json.loads  # type: ignore[assignment]
    json_text.dumps = lambda body: json.dumps(body, separators=(",", ":")).encode()  # type: ignore[assignment]
    try:
        yield
    finally:
        json_text.loads, json_text.dumps = saved  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.json_codec")
    ap.add_argument("--broker", choices=("apache-kafka", "tansu"), default="apache-kafka")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args(argv)

    from adae_stream import save_detector
    from adae_stream.stream.broker import EmbeddedBroker
    from benchmarks import e2e
    from benchmarks.models import BATCHING, tabular
    from tests.apache_kafka import ApacheKafka

    det, x = tabular()
    path = str(save_detector(det, f"{tempfile.mkdtemp(prefix='adae-json-')}/tabular"))
    jvm = ("-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-XX:-UsePerfData", "-Djava.awt.headless=true")
    figures: dict[tuple[int, str], list[float]] = {}
    with EmbeddedBroker() if args.broker == "tansu" else ApacheKafka(jvm_opts=jvm) as broker:
        for r in range(args.rounds):
            for per in CASES:
                n = args.requests
                for variant in VARIANTS:
                    if variant.startswith("pass-through"):
                        same = variant == "pass-through, acks=all"
                        value = e2e.kafka_alone(broker.bootstrap, x, "v2", per, n, same)["instances_per_s"]
                    else:
                        with standard_library_json() if variant == "json" else contextlib.nullcontext():
                            out = e2e.end_to_end(broker.bootstrap, det, path, x, "v2", per, n, *BATCHING["tabular"])
                        assert out["answered"] == out["requests"], out
                        value = out["inst_per_s"]
                    figures.setdefault((per, variant), []).append(value)
                    print(f"  round {r + 1}, {per:2d} per request, {variant:24s} {value:10,.0f}/s", flush=True)
    print(f"{args.broker}, tabular V2 JSON, medians of {args.rounds} rounds (instances/s):")
    for per in CASES:
        med = {v: statistics.median(figures[(per, v)]) for v in VARIANTS}
        ratios = [a / b for a, b in zip(figures[(per, "orjson")], figures[(per, "json")], strict=True)]
        print(
            f"  {per:2d} per request: "
            + ", ".join(f"{v} {med[v]:,.0f}" for v in VARIANTS)
            + f"; orjson/json per round {', '.join(f'{q:.2f}' for q in ratios)}; "
            + "; ".join(
                f"/ {pt}: orjson {med['orjson'] / med[pt]:.2f}, json {med['json'] / med[pt]:.2f}" for pt in VARIANTS[2:]
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
