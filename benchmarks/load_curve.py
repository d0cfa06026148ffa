"""Latency at every load: the shipped defaults against the previous ones and the Kafka pass-through (issue 40).

    python -m benchmarks.load_curve                       # Tansu and Apache Kafka, tabular and CIFAR, both deliveries
    python -m benchmarks.load_curve --brokers apache-kafka --models tabular --deliveries at_least_once --quick
    python -m benchmarks.load_curve --brokers apache-kafka --saturation-rounds 3   # saturation, each change apart

Every party is its own process, as in production: the service (or the pass-through), the load generator,
and the reader that stamps each answer's arrival. Latency is the answer's arrival at that reader minus
the request's send() in the generator (time.time() in both; one machine, one clock). CreateTime is not
used: kafka-python stamps it at send(), before the linger, so it cannot see an answer waiting in the
producer.

Per (broker, model, delivery), in one run:
- saturation: a backlog of requests, pre-produced, drained by each variant (instances/s; the ratio new /
  previous is the issue's 0.95x target);
- live saturation of the new defaults: the offered rate rises by 1.25x per step until a step is not
  kept up with; the highest kept is "100 %";
- the curve: 1-95 % of that, for the new defaults, the previous defaults and the pass-through, each
  point after a warm-up of the same load. "added" is a variant's percentile minus the pass-through's at
  the same load. The target per point: added p50 <= one batch's compute (at the batch size the service
  used there, from its own counters) + 1 ms, added p99 <= 2x that.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LOADS = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
PREVIOUS_DEFAULTS = {  # what the service shipped before issue 40
    "batching": {"dispatch_when_idle": False, "max_batch_delay_ms": 10.0},
    "kafka": {"linger_ms": 10, "commit_when_idle": False},
    "detector": {"jit_compile": False},  # XLA per bucket (jit_compile: auto) is the default since session 19
}
READER_FETCH_WAIT_MS = 100  # both brokers answer a waiting fetch when data arrives (Tansu: p50 3.7 ms at 5 and at 100)


@dataclass(frozen=True)
class Case:
    broker: str
    model: str  # tabular | cifar
    delivery: str  # at_least_once | exactly_once
    per_request: int = 1


# ---------------------------------------------------------------- the parties, each in its own process
def _service(bootstrap: str, topics: dict[str, str], det_path: str, delivery: str, extra: dict, conn) -> None:
    """The service on the shipped defaults (plus ``extra``), reporting its batch counters on request."""
    import threading

    from adae_stream.config import load_config
    from adae_stream.runner import load_scorer
    from adae_stream.stream.app import Pipeline

    overrides: dict[str, Any] = {
        "delivery": delivery,
        "kafka": {"bootstrap_servers": bootstrap, **topics, **extra.get("kafka", {})},
        "detector": {"path": det_path, **extra.get("detector", {})},
        "metrics": {"enabled": False},
        "batching": extra.get("batching", {}),
        **{section: values for section, values in extra.items() if section not in ("kafka", "batching", "detector")},
    }
    cfg = load_config(None, environ={}, overrides=overrides)
    scorer = load_scorer(cfg)
    pipeline = Pipeline(cfg, scorer, None, bootstrap)
    thread = threading.Thread(target=pipeline.run, daemon=True)
    thread.start()
    while not pipeline.ready:
        time.sleep(0.01)
    conn.send("ready")
    while (msg := conn.recv()) != "stop":
        assert msg == "stats"
        conn.send({"batches": pipeline.stats["batches"], "instances": pipeline.stats["instances"]})
    pipeline.stop()
    thread.join(60)
    conn.send("stopped")


def pass_through_clients(bootstrap: str, topics: dict[str, str], delivery: str) -> tuple[Any, Any]:
    """The pass-through's consumer and producer, with the service's settings (acks=all, one request in flight,
    no linger; read_committed and transactional under exactly_once), the partitions already assigned."""
    from kafka import KafkaConsumer, KafkaProducer

    from adae_stream.clients.build import TRANSACTION_RETRY_BACKOFF_MS

    eos = delivery == "exactly_once"
    c = KafkaConsumer(
        topics["input_topic"],
        bootstrap_servers=bootstrap,
        group_id=topics["group_id"],
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_poll_records=500,
        isolation_level="read_committed" if eos else "read_uncommitted",
    )
    extra = (
        {"transactional_id": f"pt-{uuid.uuid4().hex[:6]}", "retry_backoff_ms": TRANSACTION_RETRY_BACKOFF_MS}
        if eos
        else {}
    )
    p = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_in_flight_requests_per_connection=1, **extra
    )
    if eos:
        p.init_transactions()
    while not c.assignment():
        c.poll(timeout_ms=100)  # a new group: nothing read before the assignment
    c.seek_to_beginning()  # what that poll may have fetched is read again
    return c, p


def _pass_through(bootstrap: str, topics: dict[str, str], delivery: str, conn) -> None:
    """The transport alone, with the service's consumer and producer settings and its new commit rule:
    re-produce each record's bytes; under exactly_once in a transaction committed when a poll comes back
    short of max_poll_records (caught up)."""
    from kafka.structs import OffsetAndMetadata

    eos = delivery == "exactly_once"
    c, p = pass_through_clients(bootstrap, topics, delivery)
    conn.send("ready")
    open_txn, positions, last_commit = False, {}, time.monotonic()
    while True:
        if conn.poll():
            if conn.recv() == "stop":
                break
            conn.send({"batches": 0, "instances": 0})  # the stats the parent asks of every variant
        polled = c.poll(timeout_ms=0 if open_txn else 10)
        for tp, recs in polled.items():
            if eos and not open_txn:
                p.begin_transaction()
                open_txn = True
            for r in recs:
                p.send(topics["output_topic"], value=r.value, key=r.key, headers=r.headers)
            positions[tp] = recs[-1].offset + 1
        if eos and open_txn and sum(len(recs) for recs in polled.values()) < 500:  # caught up: the service's rule
            p.send_offsets_to_transaction(
                {tp: OffsetAndMetadata(o, "", -1) for tp, o in positions.items()}, c.group_metadata()
            )
            p.commit_transaction()
            open_txn = False
        elif not eos and positions and time.monotonic() - last_commit > 0.2:
            c.commit_async({tp: OffsetAndMetadata(o, "", -1) for tp, o in positions.items()})
            last_commit = time.monotonic()
    if open_txn:
        p.commit_transaction()
    p.close()
    c.close()
    conn.send("stopped")


def _arrivals(bootstrap: str, topic: str, read_committed: bool, conn) -> None:
    """Stamps every answer's arrival; on ("wait", prefix, n, timeout_s) replies with {key: arrival} of that prefix."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=READER_FETCH_WAIT_MS,
        max_partition_fetch_bytes=32 * 1024 * 1024,
        isolation_level="read_committed" if read_committed else "read_uncommitted",
    )
    while not (parts := c.partitions_for_topic(topic)):
        time.sleep(0.05)
    c.assign([TopicPartition(topic, p) for p in sorted(parts)])
    c.seek_to_beginning()
    seen: dict[bytes, float] = {}
    conn.send("ready")
    while True:
        for recs in c.poll(timeout_ms=20).values():
            now = time.time()
            for r in recs:
                seen.setdefault(r.key, now)
        if conn.poll():
            msg = conn.recv()
            if msg == "stop":
                break
            _, prefix, n, timeout_s = msg
            deadline = time.monotonic() + timeout_s
            want = prefix.encode() + b"-"
            while sum(1 for k in seen if k.startswith(want)) < n and time.monotonic() < deadline:
                for recs in c.poll(timeout_ms=20).values():
                    now = time.time()
                    for r in recs:
                        seen.setdefault(r.key, now)
            conn.send({k: v for k, v in seen.items() if k.startswith(want)})
    c.close()


def _generate(bootstrap: str, topic: str, payload: bytes, headers: list, rate_rps: float, n: int, prefix: str, out):
    """Requests at rate_rps (0: as fast as it can); sends each one's send() time back."""
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0 if rate_rps else 5, batch_size=1024 * 1024)
    sent: dict[bytes, float] = {}
    start = time.monotonic()
    for i in range(n):
        key = f"{prefix}-{i}".encode()
        sent[key] = time.time()
        p.send(topic, value=payload, key=key, headers=[*headers, ("request-id", key)])
        if rate_rps:
            time.sleep(max(0.0, start + (i + 1) / rate_rps - time.monotonic()))
    p.flush()
    p.close()
    out.send(sent)


# ---------------------------------------------------------------- the parent
class Party:
    """A child process spoken to over a pipe."""

    def __init__(self, target: Callable, *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(*args, child), daemon=True)
        self.proc.start()
        if not self.conn.poll(180) or self.conn.recv() != "ready":
            raise RuntimeError(f"{target.__name__} did not start")

    def ask(self, msg: Any, timeout_s: float = 120.0) -> Any:
        self.conn.send(msg)
        if not self.conn.poll(timeout_s):
            raise RuntimeError(f"no answer to {msg!r}")
        return self.conn.recv()

    def stop(self) -> None:
        try:
            self.conn.send("stop")
            self.conn.poll(60)
        finally:
            self.proc.join(30)
            if self.proc.is_alive():
                self.proc.kill()


def _offer(bootstrap: str, topic: str, payload: bytes, headers: list, rate_rps: float, n: int, prefix: str):
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    gen = ctx.Process(target=_generate, args=(bootstrap, topic, payload, headers, rate_rps, n, prefix, send))
    gen.start()
    sent = recv.recv()
    gen.join(30)
    return sent


class Variant:
    """One variant's service (or pass-through) with its own topics and arrival reader."""

    def __init__(
        self,
        name: str,
        case: Case,
        bootstrap: str,
        det_path: str,
        request: tuple[bytes, list],
        extra: dict | None = None,
    ) -> None:
        """name: "pass-through", or a service with ``extra`` over the shipped defaults (default: "previous"
        gets PREVIOUS_DEFAULTS, anything else none)."""
        from adae_stream.clients.build import ensure_topics
        from adae_stream.config import load_config

        tag = uuid.uuid4().hex[:6]
        self.name, self.case, self.bootstrap = name, case, bootstrap
        self.payload, self.headers = request
        self.topics = {
            "input_topic": f"lc-in-{tag}",
            "output_topic": f"lc-out-{tag}",
            "dead_letter_topic": f"lc-dlq-{tag}",
            "group_id": f"lc-{tag}",
        }
        cfg = load_config(
            None, environ={}, overrides={"kafka": {"bootstrap_servers": bootstrap, **self.topics, "partitions": 1}}
        )
        ensure_topics(cfg, bootstrap)
        self.det_path = det_path
        self.extra = extra if extra is not None else (PREVIOUS_DEFAULTS if name == "previous" else {})
        self.reader = Party(_arrivals, bootstrap, self.topics["output_topic"], case.delivery == "exactly_once")
        self.party: Party | None = None

    def start(self) -> None:
        if self.name == "pass-through":
            self.party = Party(_pass_through, self.bootstrap, self.topics, self.case.delivery)
        else:
            self.party = Party(_service, self.bootstrap, self.topics, self.det_path, self.case.delivery, self.extra)

    def stats(self) -> dict[str, int]:
        assert self.party is not None
        return self.party.ask("stats")

    def run(self, rate_rps: float, n: int, prefix: str) -> tuple[dict[bytes, float], dict[bytes, float]]:
        sent = _offer(self.bootstrap, self.topics["input_topic"], self.payload, self.headers, rate_rps, n, prefix)
        arrived = self.reader.ask(("wait", prefix, n, 120.0), timeout_s=180)
        return sent, arrived

    def stop(self) -> None:
        if self.party is not None:
            self.party.stop()
        self.reader.stop()


def saturation(variant: Variant, n: int) -> float:
    """Instances/s draining a pre-produced backlog of n requests (from the service's start to the last arrival)."""
    _offer(variant.bootstrap, variant.topics["input_topic"], variant.payload, variant.headers, 0, n, "sat")
    variant.start()
    arrived = variant.reader.ask(("wait", "sat", n, 300.0), timeout_s=400)
    if len(arrived) < n:
        raise RuntimeError(f"{variant.name}: {len(arrived)} of {n} answered")
    # the service's start-up (model load, warm-up, group join) is not throughput: count from its first answer
    first, last = min(arrived.values()), max(arrived.values())
    return n * variant.case.per_request / max(last - first, 1e-6)


SATURATION_VARIANTS: dict[str, dict] = {  # what each of the four changes costs at saturation, apart
    "new": {},
    "previous": PREVIOUS_DEFAULTS,
    "new, linger 10 ms": {"kafka": {"linger_ms": 10}},
    "new, fixed batching": {"batching": PREVIOUS_DEFAULTS["batching"]},
    "new, graph only": {"detector": PREVIOUS_DEFAULTS["detector"]},
}


def saturation_rounds(case: Case, bootstrap: str, det_path: str, request: tuple[bytes, list], rounds: int) -> dict:
    """Backlog saturation of each SATURATION_VARIANTS entry, taking turns for ``rounds`` rounds (a fresh
    service and topics per drain); the ratio to "previous" per round and its median."""
    backlog = {"tabular": 40000, "cifar": 4000}[case.model]
    runs: dict[str, list[float]] = {name: [] for name in SATURATION_VARIANTS}
    for r in range(rounds):
        for name, extra in SATURATION_VARIANTS.items():
            v = Variant(name, case, bootstrap, det_path, request, extra)
            try:
                runs[name].append(saturation(v, backlog))
            finally:
                v.stop()
            print(f"    round {r + 1} {name:22s} {runs[name][-1]:10,.0f} instances/s", flush=True)
    ratios = {
        name: sorted(a / b for a, b in zip(runs[name], runs["previous"], strict=True))
        for name in SATURATION_VARIANTS
        if name != "previous"
    }
    for name, rs in ratios.items():
        print(f"    {name:22s} / previous: {', '.join(f'{x:.2f}' for x in rs)} (median {rs[len(rs) // 2]:.2f})")
    return {"case": vars(case), "backlog": backlog, "instances_per_s": runs, "ratios": ratios}


def _latencies(sent: dict[bytes, float], arrived: dict[bytes, float]) -> np.ndarray:
    return np.array([(arrived[k] - sent[k]) * 1000.0 for k in sent if k in arrived])


def live_saturation(variant: Variant, start_rps: float, seconds: float = 2.0, factor: float = 1.25) -> float:
    """The highest offered rate the variant keeps up with: every request answered, answers' rate >= 95 %
    of the offered one, and the last answer within 0.5 s of the last request."""
    rate, best = start_rps, 0.0
    for step in range(40):
        n = max(20, int(rate * seconds))
        sent, arrived = variant.run(rate, n, f"ramp{step}")
        span_sent = max(sent.values()) - min(sent.values())
        offered = (n - 1) / max(span_sent, 1e-6)
        lag = max(arrived.values(), default=0) - max(sent.values())
        kept = len(arrived) == n and lag < 0.5
        if offered < 0.9 * rate or not kept:
            break
        best = offered
        rate *= factor
    return best


def curve(case: Case, bootstrap: str, det_path: str, request: tuple[bytes, list], scorer, x, quick: bool) -> dict:
    backlog = {"tabular": 10000, "cifar": 1500}[case.model] // (4 if quick else 1)
    variants = {name: Variant(name, case, bootstrap, det_path, request) for name in ("new", "previous", "pass-through")}
    out: dict[str, Any] = {"case": vars(case), "saturation": {}, "points": []}
    try:
        for name, v in variants.items():
            out["saturation"][name] = saturation(v, backlog)
            print(f"    {name:12s} saturation {out['saturation'][name]:10,.0f} instances/s", flush=True)
        out["saturation_ratio"] = out["saturation"]["new"] / out["saturation"]["previous"]
        live = live_saturation(variants["new"], 0.3 * out["saturation"]["new"] / case.per_request)
        out["live_saturation_rps"] = live
        print(f"    live saturation of the new defaults: {live:,.0f} requests/s", flush=True)
        for share in LOADS:
            rate = share * live
            seconds = 1.5 if quick else 3.0
            n = int(min(max(rate * seconds, 150), rate * 12))
            warm = max(10, int(rate * 0.5))
            point: dict[str, Any] = {"load": share, "rate_rps": rate}
            for name, v in variants.items():
                v.run(rate, warm, f"w{share}")
                before = v.stats()
                sent, arrived = v.run(rate, n, f"p{share}")
                after = v.stats()
                lat = _latencies(sent, arrived)
                cell = {"answered": len(lat), "of": n, "p50_ms": float(np.percentile(lat, 50))}
                cell["p99_ms"] = float(np.percentile(lat, 99))
                batches = after["batches"] - before["batches"]
                if batches:
                    cell["mean_batch"] = (after["instances"] - before["instances"]) / batches
                point[name] = cell
            base = point["pass-through"]
            mean_batch = point["new"].get("mean_batch", case.per_request)
            compute = _compute_ms(scorer, x, max(1, round(mean_batch)))
            point["batch_compute_ms"] = compute
            for name in ("new", "previous"):
                point[name]["added_p50_ms"] = point[name]["p50_ms"] - base["p50_ms"]
                point[name]["added_p99_ms"] = point[name]["p99_ms"] - base["p99_ms"]
            point["target_p50_ms"] = compute + 1.0
            point["target_p99_ms"] = 2 * (compute + 1.0)
            point["met"] = bool(
                point["new"]["added_p50_ms"] <= point["target_p50_ms"]
                and point["new"]["added_p99_ms"] <= point["target_p99_ms"]
            )
            out["points"].append(point)
            print(_row(point), flush=True)
    finally:
        for v in variants.values():
            v.stop()
    return out


def _compute_ms(scorer, x: np.ndarray, batch: int) -> float:
    xb = x[:batch] if batch <= len(x) else np.concatenate([x] * (batch // len(x) + 1))[:batch]
    scorer(xb)
    t0 = time.perf_counter()
    for _ in range(20):
        scorer(xb)
    return (time.perf_counter() - t0) / 20 * 1000


def _row(p: dict) -> str:
    n, o, b = p["new"], p["previous"], p["pass-through"]
    return (
        f"    {p['load'] * 100:4.0f}% {p['rate_rps']:8,.0f} rq/s"
        f" | pass-through p50/p99 {b['p50_ms']:6.2f}/{b['p99_ms']:6.2f}"
        f" | new {n['added_p50_ms']:+6.2f}/{n['added_p99_ms']:+6.2f} (batch {n.get('mean_batch', 0):5.1f})"
        f" | previous {o['added_p50_ms']:+6.2f}/{o['added_p99_ms']:+6.2f} (batch {o.get('mean_batch', 0):5.1f})"
        f" | target {p['target_p50_ms']:.2f}/{p['target_p99_ms']:.2f} {'met' if p['met'] else 'MISSED'}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.load_curve")
    ap.add_argument("--brokers", nargs="+", default=["apache-kafka", "tansu"])
    ap.add_argument("--models", nargs="+", default=["tabular", "cifar"])
    ap.add_argument("--deliveries", nargs="+", default=["at_least_once", "exactly_once"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None, help="write every figure here")
    ap.add_argument("--saturation-rounds", type=int, default=0, help="only the saturation variants, this many rounds")
    args = ap.parse_args(argv)

    from adae_stream import save_detector
    from adae_stream.codecs import encode_request
    from adae_stream.stream.broker import EmbeddedBroker
    from benchmarks import models as model_sets
    from tests.apache_kafka import ApacheKafka, kafka_version

    tmp = tempfile.mkdtemp(prefix="adae-load-curve-")
    built = {name: getattr(model_sets, name)() for name in args.models}
    paths = {name: str(save_detector(det, f"{tmp}/{name}")) for name, (det, _) in built.items()}
    scorers = {name: det.stream_scorer() for name, (det, _) in built.items()}
    results = []
    jvm = ("-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-XX:-UsePerfData", "-Djava.awt.headless=true")
    for broker_name in args.brokers:
        label = broker_name if broker_name == "tansu" else f"apache-kafka {kafka_version()}"
        for model in args.models:
            _, x = built[model]
            request = encode_request(x[:1], "v2", "x")
            for delivery in args.deliveries:
                case = Case(broker_name, model, delivery)
                print(f"  {label}, {model}, {delivery}, V2 JSON requests of 1 instance", flush=True)
                # a fresh broker per case: Tansu keeps every record in memory and its fetches slowed as the
                # log grew (the pass-through's p50 went from 42 to 167 ms over one case of ~100,000 records)
                with EmbeddedBroker() if broker_name == "tansu" else ApacheKafka(jvm_opts=jvm) as broker:
                    if args.saturation_rounds:
                        results.append(
                            saturation_rounds(case, broker.bootstrap, paths[model], request, args.saturation_rounds)
                        )
                    else:
                        results.append(
                            curve(case, broker.bootstrap, paths[model], request, scorers[model], x, args.quick)
                        )
    if args.saturation_rounds:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        return 0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    met = sum(p["met"] for r in results for p in r["points"] if p["load"] <= 0.9)
    total = sum(1 for r in results for p in r["points"] if p["load"] <= 0.9)
    ratios = ", ".join(f"{r['saturation_ratio']:.2f}" for r in results)
    print(f"  targets met at loads <= 90 %: {met} of {total}; saturation new/previous: {ratios}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
