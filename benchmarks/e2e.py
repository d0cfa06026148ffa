"""(4) end to end through the embedded broker, (5) the Kafka client alone, and latency at fixed load."""
from __future__ import annotations

import threading
import time
import uuid

import numpy as np
from kafka import KafkaConsumer, KafkaProducer

from adae_stream.config import BatchingConfig, load_config
from adae_stream.stream.codecs import encode_request


def _config(bootstrap: str, det_path: str, max_batch: int, delay_ms: float, buckets: list[int], fetch_wait_ms: int = 20):
    tag = uuid.uuid4().hex[:8]
    return load_config(None, environ={}, overrides={
        "kafka": {"bootstrap_servers": bootstrap, "input_topic": f"bin-{tag}", "output_topic": f"bout-{tag}", "dead_letter_topic": f"bdlq-{tag}",
                  "group_id": f"bg-{tag}", "partitions": 4, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
                  "max_poll_records": 2000, "fetch_max_wait_ms": fetch_wait_ms},
        "detector": {"path": det_path, "return_all_predictions": True},
        "batching": {"max_batch_size": max_batch, "max_batch_delay_ms": delay_ms, "bucket_sizes": buckets},
        "metrics": {"enabled": False},
    })


def _producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, batch_size=1024 * 1024, max_request_size=32 * 1024 * 1024)


def _records(x: np.ndarray, fmt: str, per_request: int, prefix: str) -> list[tuple[bytes, list, bytes]]:
    out = []
    for i in range(0, len(x) - per_request + 1, per_request):
        rid = f"{prefix}-{i // per_request}"
        payload, headers = encode_request(x[i : i + per_request], fmt, rid)
        out.append((payload, headers, rid.encode()))
    return out


def _drain(bootstrap: str, topic: str, expected: int, timeout_s: float) -> list:
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=50,
                      max_partition_fetch_bytes=32 * 1024 * 1024)
    got, deadline = [], time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=100, max_records=5000).values():
            got.extend(recs)
    c.close()
    return got


def _start_pipeline(cfg, scorer):
    from adae_stream.stream.app import Pipeline

    p = Pipeline(cfg, scorer, None, cfg.kafka.bootstrap_servers)
    t = threading.Thread(target=p.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not p.ready and time.monotonic() < deadline:
        time.sleep(0.05)
    return p, t


def end_to_end(bootstrap: str, det, det_path: str, x: np.ndarray, fmt: str, per_request: int, n_requests: int,
               max_batch: int = 256, buckets: list[int] | None = None) -> dict:
    """Pre-produce n_requests, then run the pipeline: instances/s from first to last answer (broker timestamps)."""
    buckets = buckets or BatchingConfig().bucket_sizes
    cfg = _config(bootstrap, det_path, max_batch, 5, buckets)
    xs = np.concatenate([x] * int(np.ceil(n_requests * per_request / len(x))))[: n_requests * per_request]
    records = _records(xs, fmt, per_request, "e2e")
    p = _producer(bootstrap)
    from adae_stream.stream.app import ensure_topics

    ensure_topics(cfg, bootstrap)
    for payload, headers, key in records:
        p.send(cfg.kafka.input_topic, value=payload, key=key, headers=headers)
    p.flush()
    p.close()
    scorer = det.stream_scorer(buckets)
    scorer.warmup(max_batch)
    pipeline, thread = _start_pipeline(cfg, scorer)
    t0 = time.time()
    out = _drain(bootstrap, cfg.kafka.output_topic, len(records), timeout_s=600)
    pipeline.stop()
    thread.join(60)
    stamps = sorted(r.timestamp for r in out)
    # first answer's batch was already scored: count from the start of the run to the last answer
    span = max((stamps[-1] - t0 * 1000) / 1000.0, 1e-9)
    mb = sum(len(r[0]) for r in records) / 1e6
    return {"format": fmt, "requests": len(records), "instances": len(records) * per_request, "answered": len(out),
            "inst_per_s": len(records) * per_request / span, "MB_in": mb, "MB_per_s": mb / span, "batches": pipeline.stats["batches"]}


def _ensure(bootstrap: str, *topics: str) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, 4, 1) for t in topics])
    admin.close()


class PassThrough(threading.Thread):
    """The transport alone: consume records and re-produce their bytes unchanged (no decode, no scoring)."""

    def __init__(self, bootstrap: str, topic_in: str, topic_out: str, fetch_wait_ms: int = 20) -> None:
        super().__init__(daemon=True)
        # no consumer group: a group join on the embedded broker waits session_timeout/2, which is not transport cost
        self.c = KafkaConsumer(topic_in, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                               enable_auto_commit=False, fetch_max_wait_ms=fetch_wait_ms, max_poll_records=2000, max_partition_fetch_bytes=32 * 1024 * 1024)
        self.p = _producer(bootstrap)
        self.topic_out = topic_out
        self.halt = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            polled = self.c.poll(timeout_ms=50, max_records=2000)
            if self.c.assignment():
                self.ready.set()
            for recs in polled.values():
                for r in recs:
                    self.p.send(self.topic_out, value=r.value, key=r.key, headers=r.headers)
        self.p.flush()
        self.c.close()
        self.p.close()


def kafka_alone(bootstrap: str, x: np.ndarray, fmt: str, per_request: int, n_requests: int) -> dict:
    """(5) Pre-produce the same records as (4), then time the pass-through loop from start to last re-produced record."""
    tag = uuid.uuid4().hex[:6]
    topic_in, topic_out = f"ka-in-{tag}", f"ka-out-{tag}"
    _ensure(bootstrap, topic_in, topic_out)
    xs = np.concatenate([x] * int(np.ceil(n_requests * per_request / len(x))))[: n_requests * per_request]
    records = _records(xs, fmt, per_request, "ka")
    p = _producer(bootstrap)
    for payload, headers, key in records:
        p.send(topic_in, value=payload, key=key, headers=headers)
    p.flush()
    p.close()
    pt = PassThrough(bootstrap, topic_in, topic_out)
    t0 = time.time()
    pt.start()
    out = _drain(bootstrap, topic_out, len(records), timeout_s=300)
    pt.halt.set()
    pt.join(30)
    span = max((max(r.timestamp for r in out) - t0 * 1000) / 1000.0, 1e-9)
    return {"format": fmt, "records": len(out), "instances_per_s": len(out) * per_request / span}


def _generate(bootstrap: str, topic: str, payloads: list[bytes], headers: list, rate_rps: float, n: int) -> None:
    """The load generator, run in its own process so it does not share the pipeline's GIL."""
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    start = time.monotonic()
    for i in range(n):
        p.send(topic, value=payloads[i % len(payloads)], key=f"lat-{i}".encode(), headers=headers + [("request-id", f"lat-{i}".encode())])
        time.sleep(max(0.0, start + (i + 1) / rate_rps - time.monotonic()))
    p.flush()
    p.close()


def _offered_load(bootstrap: str, topic_in: str, topic_out: str, payloads: list[bytes], headers: list, rate_rps: float, seconds: float) -> np.ndarray:
    """Send pre-encoded requests at rate_rps; latency per request = answer CreateTime - request CreateTime (ms)."""
    import multiprocessing

    n = int(rate_rps * seconds)
    gen = multiprocessing.get_context("spawn").Process(target=_generate, args=(bootstrap, topic_in, payloads, headers, rate_rps, n))
    gen.start()
    gen.join(seconds + 120)
    out = _drain(bootstrap, topic_out, n, timeout_s=60)
    inputs = {r.key: r.timestamp for r in _drain(bootstrap, topic_in, n, timeout_s=60)}
    return np.array([r.timestamp - inputs[r.key] for r in out if r.key in inputs], dtype=float)


def latency(bootstrap: str, det, det_path: str, x: np.ndarray, per_request: int, rate_rps: float, seconds: float,
            max_batch: int = 256, delay_ms: float = 5.0, fetch_wait_ms: int = 20) -> dict:
    """Added latency at a fixed offered load: the pipeline vs the pass-through loop, same load, same records (npy).

    fetch_wait_ms is the same for both: the embedded broker sleeps out every long poll, adding a
    uniform 0..fetch_wait_ms delay per record to both runs. Shorter waits cut that noise at low load
    but cost CPU (more empty fetches) that the 2-core machine lacks at higher loads.
    """
    payloads = [encode_request(x[j : j + per_request], "npy", "x")[0] for j in range(0, 64 * per_request, per_request)]
    headers = [("content-type", b"application/x-npy")]
    tag = uuid.uuid4().hex[:6]
    _ensure(bootstrap, f"lpt-in-{tag}", f"lpt-out-{tag}")
    pt = PassThrough(bootstrap, f"lpt-in-{tag}", f"lpt-out-{tag}", fetch_wait_ms)
    pt.start()
    pt.ready.wait(30)
    base = _offered_load(bootstrap, f"lpt-in-{tag}", f"lpt-out-{tag}", payloads, headers, rate_rps, seconds)
    pt.halt.set()
    pt.join(30)

    buckets = BatchingConfig().bucket_sizes
    cfg = _config(bootstrap, det_path, max_batch, delay_ms, buckets, fetch_wait_ms)
    from adae_stream.stream.app import ensure_topics

    ensure_topics(cfg, bootstrap)
    scorer = det.stream_scorer(buckets)
    scorer.warmup(max_batch)
    pipeline, thread = _start_pipeline(cfg, scorer)
    lat = _offered_load(bootstrap, cfg.kafka.input_topic, cfg.kafka.output_topic, payloads, headers, rate_rps, seconds)
    pipeline.stop()
    thread.join(60)
    typical = max(1, min(max_batch, int(round(rate_rps * per_request * (delay_ms / 1000.0 + 0.02)))))
    xb = x[:typical]
    scorer(xb)
    t0 = time.perf_counter()
    for _ in range(20):
        scorer(xb)
    batch_ms = (time.perf_counter() - t0) / 20 * 1000
    p = {q: float(np.percentile(lat, q)) for q in (50, 99)}
    b = {q: float(np.percentile(base, q)) for q in (50, 99)}
    return {"rate_rps": rate_rps, "per_request": per_request, "answered": len(lat), "p50_ms": p[50], "p99_ms": p[99],
            "passthrough_p50_ms": b[50], "passthrough_p99_ms": b[99], "added_p50_ms": p[50] - b[50], "added_p99_ms": p[99] - b[99],
            "max_batch_delay_ms": delay_ms, "batch_compute_ms": batch_ms, "target_added_p99_ms": delay_ms + 2 * batch_ms}
