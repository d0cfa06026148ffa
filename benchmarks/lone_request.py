"""Where a lone request's time goes at low load: the service against the pass-through, leg by leg.

    python -m benchmarks.lone_request [--rate 40] [--seconds 8] [--rounds 2] [--delivery at_least_once]

On Apache Kafka (started here), V2 JSON requests of one tabular instance at ``--rate`` requests/s from a
generator in its own process, answers stamped on arrival by a reader in its own process (both from
benchmarks/load_curve.py). The service (shipped defaults: `detector.jit_compile: auto`, XLA where warm-up
measures it faster; and with `jit_compile: false`, TF's graph alone, the default before session 19) and the
kafka-python pass-through (its consumer and producer settings, as in load_curve) run in this process, taking
turns, and stamp each request when ``poll()`` returned it, when it was decoded, when its answer went to be
encoded and when the producer's ``send()`` returned. So the end-to-end latency splits into: the way in (send
to poll return), decode, batch+score (waiting for the batch and scoring it), encode+send() (the pass-through:
send() alone), and the way out (to the reader's arrival). The middle legs are what the service adds; the way
in and out are the same clients with the same settings in both, so their difference between variants is the
run-to-run noise of the transport. Each variant's loop thread's CPU is read during the measured requests and
over 2 s with no traffic (from IDLE_AFTER_S after the last request), as a share of one core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LEGS = ("way in", "decode", "batch+score", "encode+send()", "way out", "total")


def _legs(sent: dict[bytes, float], stamps: dict[bytes, dict[str, float]], arrived: dict[bytes, float]) -> dict:
    keys = [k for k in sent if k in arrived and "published" in stamps.get(k, {})]
    marks = ("poll", "ingested", "publish", "published")
    a = np.array([[sent[k], *(stamps[k][m] for m in marks), arrived[k]] for k in keys])
    ms = np.diff(a, axis=1) * 1000.0
    legs = dict(zip(LEGS[:-1], ms.T, strict=True)) | {"total": (a[:, -1] - a[:, 0]) * 1000.0}
    if all("model call" in stamps[k] for k in keys):
        legs["model call"] = np.array([stamps[k]["model call"] for k in keys]) * 1000.0
    return {"answered": len(keys)} | {
        name: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))} for name, v in legs.items()
    }


# variant -> its settings over the shipped defaults (the pass-through has no service)
VARIANTS: dict[str, dict[str, dict] | None] = {
    "service": {},
    "service, graph only": {"detector": {"jit_compile": False}},
    "pass-through": None,
}
IDLE_AFTER_S = 1.5  # after the last request: what the loop spends with no traffic


def _thread_cpu_s(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _service(
    bootstrap: str, topics: dict[str, str], det_path: str, delivery: str, stamps: dict, settings: dict[str, dict]
) -> tuple[Callable, threading.Thread]:
    """The service on its shipped defaults but ``settings``, with the stamps; its stop and its loop's thread."""
    from adae_stream.config import load_config
    from adae_stream.runner import load_scorer
    from adae_stream.stream.app import Pipeline

    overrides = {
        "delivery": delivery,
        "kafka": {"bootstrap_servers": bootstrap, **topics},
        "detector": {"path": det_path, **settings.get("detector", {})},
        "batching": settings.get("batching", {}),
        "metrics": {"enabled": False},
    }
    cfg = load_config(None, environ={}, overrides=overrides)

    class Stamped(Pipeline):
        def _on_connected(self) -> None:
            super()._on_connected()
            poll, ingest, publish = self.consumer.poll, self.path.ingest, self.path._publish

            def stamped_poll(*a: Any, **k: Any) -> Any:
                out = poll(*a, **k)
                t = time.time()
                for records in out.values():
                    for r in records:
                        stamps.setdefault(r.key, {})["poll"] = t
                return out

            def stamped_ingest(record: Any) -> None:
                ingest(record)
                stamps.setdefault(record.key, {})["ingested"] = time.time()

            def stamped_publish(lane: Any, req: Any, result: Any) -> None:
                mine = stamps.setdefault(req.record.key, {})
                mine["publish"] = time.time()
                mine["model call"] = last_call[0]
                publish(lane, req, result)
                mine["published"] = time.time()

            self.consumer.poll = stamped_poll  # type: ignore[method-assign]
            self.path.ingest = stamped_ingest  # type: ignore[method-assign]
            self.path._publish = stamped_publish  # type: ignore[method-assign]

    scorer = load_scorer(cfg)
    last_call = [0.0]

    class TimedScorer:
        """The scorer, with its last call's duration kept (the model call's share of batch+score)."""

        info = scorer.info

        def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
            t = time.perf_counter()
            try:
                return scorer(x)
            finally:
                last_call[0] = time.perf_counter() - t

        def warmup(self, up_to: int | None = None) -> None:
            scorer.warmup(up_to)

    pipeline = Stamped(cfg, TimedScorer(), None, bootstrap)
    thread = threading.Thread(target=pipeline.run, daemon=True)
    thread.start()
    while not pipeline.ready:
        time.sleep(0.01)

    def stop() -> None:
        pipeline.stop()
        thread.join(60)

    return stop, thread


def _pass_through(
    bootstrap: str, topics: dict[str, str], delivery: str, stamps: dict
) -> tuple[Callable, threading.Thread]:
    """load_curve's pass-through loop (at_least_once: commits every 200 ms), with the same stamps."""
    from kafka.structs import OffsetAndMetadata

    from benchmarks.load_curve import pass_through_clients

    assert delivery == "at_least_once", "the pass-through here is at_least_once only"
    c, p = pass_through_clients(bootstrap, topics, delivery)
    halt = threading.Event()

    def loop() -> None:
        positions: dict = {}
        last = time.monotonic()
        while not halt.is_set():
            polled = c.poll(timeout_ms=10)
            t = time.time()
            for tp, records in polled.items():
                for r in records:
                    now = time.time()
                    mine = stamps[r.key] = {"poll": t, "ingested": now, "publish": now}
                    p.send(topics["output_topic"], value=r.value, key=r.key, headers=r.headers)
                    mine["published"] = time.time()
                positions[tp] = records[-1].offset + 1
            if positions and time.monotonic() - last > 0.2:
                c.commit_async({tp: OffsetAndMetadata(o, "", -1) for tp, o in positions.items()})
                last = time.monotonic()
        p.close()
        c.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def stop() -> None:
        halt.set()
        thread.join(30)

    return stop, thread


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lone_request")
    ap.add_argument("--rate", type=float, default=40.0, help="requests/s (1 %% of saturation is ~40 here)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)

    from adae_stream import save_detector
    from adae_stream.codecs import encode_request
    from benchmarks.load_curve import Case, Variant
    from benchmarks.models import tabular
    from tests.apache_kafka import ApacheKafka

    det, x = tabular()
    path = str(save_detector(det, f"{tempfile.mkdtemp(prefix='adae-lone-')}/tabular"))
    request = encode_request(x[:1], "v2", "x")
    n = int(args.rate * args.seconds)
    jvm = ("-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-XX:-UsePerfData", "-Djava.awt.headless=true")
    rows = []
    with ApacheKafka(jvm_opts=jvm) as broker:
        case = Case("apache-kafka", "tabular", "at_least_once")
        for r in range(args.rounds):
            for name in VARIANTS:
                variant = Variant(name, case, broker.bootstrap, path, request, extra={})
                stamps: dict[bytes, dict[str, float]] = {}
                settings = VARIANTS[name]
                if settings is None:
                    stop, thread = _pass_through(broker.bootstrap, variant.topics, case.delivery, stamps)
                else:
                    stop, thread = _service(broker.bootstrap, variant.topics, path, case.delivery, stamps, settings)
                try:
                    variant.run(args.rate, max(20, n // 8), "warm")
                    cpu, start = _thread_cpu_s(thread), time.monotonic()
                    sent, arrived = variant.run(args.rate, n, "m")
                    busy = (_thread_cpu_s(thread) - cpu) / (time.monotonic() - start)
                    time.sleep(IDLE_AFTER_S)
                    cpu, start = _thread_cpu_s(thread), time.monotonic()
                    time.sleep(2.0)
                    idle = (_thread_cpu_s(thread) - cpu) / (time.monotonic() - start)
                finally:
                    stop()
                    variant.stop()
                row = {"round": r + 1, "variant": name, "loop cpu": busy, "idle cpu": idle} | _legs(
                    sent, stamps, arrived
                )
                rows.append(row)
                print(
                    f"  round {row['round']} {name:13s} ({row['answered']}/{n}) "
                    + "  ".join(
                        f"{leg} {row[leg]['p50']:.2f}/{row[leg]['p99']:.2f}"
                        for leg in (*LEGS, "model call")
                        if leg in row
                    )
                    + f"  loop CPU {busy:.1%} of a core, idle {idle:.1%}",
                    flush=True,
                )
    print(f"ms, p50/p99, {args.rate:.0f} requests/s of one instance, at_least_once, Apache Kafka")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
