"""(4) end to end through the embedded broker, (5) the Kafka client alone, and latency at fixed load."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from adae_stream.codecs import encode_request
from adae_stream.config import BatchingConfig, load_config


def _config(
    bootstrap: str, det_path: str, max_batch: int, delay_ms: float, buckets: list[int], fetch_wait_ms: int = 20
):
    tag = uuid.uuid4().hex[:8]
    return load_config(
        None,
        environ={},
        overrides={
            "kafka": {
                "bootstrap_servers": bootstrap,
                "input_topic": f"bin-{tag}",
                "output_topic": f"bout-{tag}",
                "dead_letter_topic": f"bdlq-{tag}",
                "group_id": f"bg-{tag}",
                "partitions": 4,
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
                "max_poll_records": 2000,
                "fetch_max_wait_ms": fetch_wait_ms,
            },
            "detector": {"path": det_path, "return_all_predictions": True},
            "batching": {"max_batch_size": max_batch, "max_batch_delay_ms": delay_ms, "bucket_sizes": buckets},
            "metrics": {"enabled": False},
        },
    )


def _producer(bootstrap: str, service_settings: bool = False) -> KafkaProducer:
    """The benchmarks' own producer (acks=1, 10 ms linger, five requests in flight), or with the service's
    delivery settings (acks=all, no linger, one request in flight: clients/build.py)."""
    if service_settings:
        settings: dict = {"acks": "all", "linger_ms": 0, "max_in_flight_requests_per_connection": 1}
    else:
        settings = {"linger_ms": 10}
    return KafkaProducer(
        bootstrap_servers=bootstrap, batch_size=1024 * 1024, max_request_size=32 * 1024 * 1024, **settings
    )


def _records(x: np.ndarray, fmt: str, per_request: int, prefix: str) -> list[tuple[bytes, list, bytes]]:
    out = []
    for i in range(0, len(x) - per_request + 1, per_request):
        rid = f"{prefix}-{i // per_request}"
        payload, headers = encode_request(x[i : i + per_request], fmt, rid)
        out.append((payload, headers, rid.encode()))
    return out


def _assign(
    c: KafkaConsumer, topic: str, positions: dict[TopicPartition, int], deadline: float
) -> list[TopicPartition]:
    """Assign every partition of topic to c (no group), each at its position in ``positions`` (else 0)."""
    while (parts := c.partitions_for_topic(topic)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
    c.assign(tps)
    for tp in tps:
        c.seek(tp, positions.get(tp, 0))
    return tps


class TopicReader:
    """Reads a topic from its beginning and keeps each record's key and broker timestamp (ms).

    Its consumer exists only inside wait(), resuming from where the last wait stopped, so no reader
    fetches (and takes CPU from the pipeline in this process) while load is being measured.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.positions: dict[TopicPartition, int] = {}
        self.stamps: dict[bytes, int] = {}

    def wait(self, count: int, timeout_s: float) -> dict[bytes, int]:
        """Read until ``count`` distinct keys have arrived (or the timeout); returns key -> timestamp."""
        deadline = time.monotonic() + timeout_s
        c = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=32 * 1024 * 1024,
        )
        try:
            tps = _assign(c, self.topic, self.positions, deadline)
            while len(self.stamps) < count and time.monotonic() < deadline:
                for recs in c.poll(timeout_ms=100, max_records=5000).values():
                    self.stamps.update((r.key, r.timestamp) for r in recs)
            self.positions.update({tp: c.position(tp) for tp in tps})
        finally:
            c.close()
        return self.stamps


def read_topic(bootstrap: str, topic: str, count: int, timeout_s: float) -> dict[bytes, int]:
    return TopicReader(bootstrap, topic).wait(count, timeout_s)


def _start_pipeline(cfg, scorer, pipeline_cls=None):
    from adae_stream.stream.app import Pipeline

    p = (pipeline_cls or Pipeline)(cfg, scorer, None, cfg.kafka.bootstrap_servers)
    t = threading.Thread(target=p.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not p.ready and time.monotonic() < deadline:
        time.sleep(0.001)  # end_to_end's clock starts here: consumption begins the moment partitions are assigned
    return p, t


def end_to_end(
    bootstrap: str,
    det,
    det_path: str,
    x: np.ndarray,
    fmt: str,
    per_request: int,
    n_requests: int,
    max_batch: int = 256,
    buckets: list[int] | None = None,
) -> dict:
    """Pre-produce n_requests, then run the pipeline: instances/s from first to last answer (broker timestamps)."""
    buckets = buckets or BatchingConfig().bucket_sizes
    cfg = _config(bootstrap, det_path, max_batch, 5, buckets)
    xs = np.concatenate([x] * int(np.ceil(n_requests * per_request / len(x))))[: n_requests * per_request]
    records = _records(xs, fmt, per_request, "e2e")
    p = _producer(bootstrap)
    from adae_stream.clients.build import ensure_topics

    ensure_topics(cfg, bootstrap)
    for payload, headers, key in records:
        p.send(cfg.kafka.input_topic, value=payload, key=key, headers=headers)
    p.flush()
    p.close()
    scorer = det.stream_scorer(buckets)
    scorer.warmup(max_batch)
    pipeline, thread = _start_pipeline(cfg, scorer)
    t0 = time.time()
    out = read_topic(bootstrap, cfg.kafka.output_topic, len(records), timeout_s=600)
    pipeline.stop()
    thread.join(60)
    stamps = sorted(out.values())
    # first answer's batch was already scored: count from the start of the run to the last answer
    span = max((stamps[-1] - t0 * 1000) / 1000.0, 1e-9)
    mb = sum(len(r[0]) for r in records) / 1e6
    return {
        "format": fmt,
        "max_batch_size": max_batch,
        "requests": len(records),
        "instances": len(records) * per_request,
        "answered": len(out),
        "inst_per_s": len(records) * per_request / span,
        "MB_in": mb,
        "MB_per_s": mb / span,
        "batches": pipeline.stats["batches"],
    }


def _ensure(bootstrap: str, *topics: str) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    # as large as the producer's requests: Apache Kafka enforces it (1 MiB by default), Tansu does not
    limit = {"max.message.bytes": str(32 * 1024 * 1024)}
    admin.create_topics([NewTopic(t, 4, 1, topic_configs=limit) for t in topics])
    admin.close()


class PassThrough(threading.Thread):
    """The transport alone: consume records and re-produce their bytes unchanged (no decode, no scoring)."""

    def __init__(
        self, bootstrap: str, topic_in: str, topic_out: str, fetch_wait_ms: int = 20, service_settings: bool = False
    ) -> None:
        super().__init__(daemon=True)
        # no consumer group: a group join on the embedded broker waits session_timeout/2, which is not transport
        # cost; partitions assigned here, so consumption starts the moment run() does (kafka_alone's clock)
        self.c = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_wait_ms,
            max_poll_records=2000,
            max_partition_fetch_bytes=32 * 1024 * 1024,
        )
        _assign(self.c, topic_in, {}, time.monotonic() + 30)
        self.p = _producer(bootstrap, service_settings)
        self.topic_out = topic_out
        self.halt = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        self.ready.set()
        while not self.halt.is_set():
            polled = self.c.poll(timeout_ms=50, max_records=2000)
            for recs in polled.values():
                for r in recs:
                    self.p.send(self.topic_out, value=r.value, key=r.key, headers=r.headers)
        self.p.flush()
        self.c.close()
        self.p.close()


def kafka_alone(
    bootstrap: str, x: np.ndarray, fmt: str, per_request: int, n_requests: int, service_settings: bool = False
) -> dict:
    """(5) Pre-produce the same records as (4), then time the pass-through loop from its start (partitions already
    assigned, like the pipeline's clock) to the last re-produced record; ``service_settings``: it re-produces
    with the service's delivery settings (_producer)."""
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
    pt = PassThrough(bootstrap, topic_in, topic_out, service_settings=service_settings)
    t0 = time.time()
    pt.start()
    out = read_topic(bootstrap, topic_out, len(records), timeout_s=300)
    pt.halt.set()
    pt.join(30)
    span = max((max(out.values()) - t0 * 1000) / 1000.0, 1e-9)
    return {"format": fmt, "records": len(out), "instances_per_s": len(out) * per_request / span}


def _generate(
    bootstrap: str,
    topic: str,
    payloads: list[bytes],
    headers: list,
    rate_rps: float,
    n: int,
    prefix: str,
    models: tuple[str, ...] = (),
) -> None:
    """The load generator, run in its own process so it does not share the pipeline's GIL.

    linger_ms=2, as clients do (Apache Kafka 4.0's Java producer defaults to 5 ms, KIP-1030): with 0,
    every request was its own produce request, and the generator plus the broker took ~0.25 core more
    of the 2 the pipeline runs on (machine 1.58 -> 1.30 cores busy at 2,344 requests/s). Both sides of
    every comparison use this same generator, so the 0-2 ms it may add cancels in "added" latency.
    ``models``: request i names models[i % len(models)] in an ``mlserver-model`` header (routing).
    """
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    start = time.monotonic()
    for i in range(n):
        rid = f"{prefix}-{i}".encode()
        routed = [("mlserver-model", models[i % len(models)].encode())] if models else []
        p.send(topic, value=payloads[i % len(payloads)], key=rid, headers=[*headers, *routed, ("request-id", rid)])
        time.sleep(max(0.0, start + (i + 1) / rate_rps - time.monotonic()))
    p.flush()
    p.close()


def _npy_payloads(x: np.ndarray, per_request: int) -> tuple[list[bytes], list]:
    payloads = [encode_request(x[j : j + per_request], "npy", "x")[0] for j in range(0, 64 * per_request, per_request)]
    return payloads, [("content-type", b"application/x-npy")]


def _offer(
    bootstrap: str,
    topic: str,
    x: np.ndarray,
    per_request: int,
    rate_rps: float,
    seconds: float,
    prefix: str,
    models: tuple[str, ...] = (),
) -> int:
    """Send npy requests at rate_rps for `seconds` from a separate process; returns how many were sent."""
    import multiprocessing

    payloads, headers = _npy_payloads(x, per_request)
    n = max(1, int(rate_rps * seconds))
    gen = multiprocessing.get_context("spawn").Process(
        target=_generate, args=(bootstrap, topic, payloads, headers, rate_rps, n, prefix, models)
    )
    gen.start()
    gen.join(seconds + 120)
    return n


def _step(requests: dict[bytes, int], answers: dict[bytes, int], prefix: str, n: int) -> dict:
    """Latencies (answer CreateTime - request CreateTime) and rates of the requests keyed prefix-0..n-1."""
    keys = [f"{prefix}-{i}".encode() for i in range(n)]
    sent = np.array([requests[k] for k in keys if k in requests], dtype=float)
    lat = np.array([answers[k] - requests[k] for k in keys if k in answers and k in requests], dtype=float)
    span = max((sent.max() - sent.min()) / 1000.0, 1e-3) if len(sent) > 1 else 1e-3
    last = max((answers[k] for k in keys if k in answers), default=sent.max() if len(sent) else 0)
    return {
        "sent": len(sent),
        "answered": len(lat),
        "offered_rps": float((len(sent) - 1) / span),
        "answered_rps": float(len(lat) / max((last - sent.min()) / 1000.0, 1e-3)) if len(sent) else 0.0,
        "latency_ms": lat,
    }


def _pipeline_under_load(
    bootstrap: str,
    det,
    det_path: str,
    max_batch: int,
    buckets: list[int],
    delay_ms: float,
    fetch_wait_ms: int,
    pipeline_cls=None,
):
    """A pipeline thread on fresh topics, joined and warm, with readers of its input and output."""
    from adae_stream.clients.build import ensure_topics

    cfg = _config(bootstrap, det_path, max_batch, delay_ms, buckets, fetch_wait_ms)
    ensure_topics(cfg, bootstrap)
    scorer = det.stream_scorer(buckets)
    scorer.warmup(max_batch)
    pipeline, thread = _start_pipeline(cfg, scorer, pipeline_cls)
    return (
        cfg,
        pipeline,
        thread,
        TopicReader(bootstrap, cfg.kafka.input_topic),
        TopicReader(bootstrap, cfg.kafka.output_topic),
    )


def live_saturation(
    bootstrap: str,
    det,
    det_path: str,
    x: np.ndarray,
    per_request: int,
    max_batch: int,
    buckets: list[int],
    start_rps: float = 1200.0,
    factor: float = 1.25,
    seconds: float = 4.0,
    delay_ms: float = 5.0,
    fetch_wait_ms: int = 20,
) -> dict:
    """The saturating load with the load generator and the broker on the same machine, as in the latency runs.

    Saturation measured from pre-produced data leaves the whole machine to the pipeline; a live load
    generator and the broker's work for it do not, so half of that figure can be near or past what
    the machine sustains live. Here the offered rate rises by ``factor`` per step of ``seconds``; a
    step is kept up with when every request is answered and the answers' rate is at least 95 % of the
    rate the generator achieved (a backlog growing through the step pushes the last answers late).
    The first step that is not kept up with, or that the generator cannot offer (below 90 % of the
    asked rate), ends the ramp; the saturating load is the highest offered rate that was kept up with.
    """
    cfg, pipeline, thread, requests, answers = _pipeline_under_load(
        bootstrap, det, det_path, max_batch, buckets, delay_ms, fetch_wait_ms
    )
    steps, total, rate, best = [], 0, start_rps, 0.0
    try:
        while True:
            prefix = f"sat{len(steps)}"
            n = _offer(bootstrap, cfg.kafka.input_topic, x, per_request, rate, seconds, prefix)
            total += n
            st = _step(requests.wait(total, 60), answers.wait(total, 60), prefix, n)
            kept = bool(st["answered"] == n and st["answered_rps"] >= 0.95 * st["offered_rps"])
            generator_limited = bool(st["offered_rps"] < 0.9 * rate)
            lat = st.pop("latency_ms")
            steps.append(
                {
                    **st,
                    "asked_rps": rate,
                    "kept_up": kept,
                    "generator_limited": generator_limited,
                    "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                    "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
                }
            )
            if not kept or generator_limited:
                break
            best = st["offered_rps"]
            rate *= factor
    finally:
        pipeline.stop()
        thread.join(60)
    return {"saturation_rps": best, "per_request": per_request, "steps": steps}


WARMUP_S = 2.0


def _measure(
    bootstrap: str,
    topic_in: str,
    requests: TopicReader,
    answers: TopicReader,
    x: np.ndarray,
    per_request: int,
    rate_rps: float,
    seconds: float,
) -> np.ndarray:
    """Latencies (ms) of `seconds` of load at rate_rps, after WARMUP_S of the same load whose answers are
    awaited but not counted. A consumer's first second of traffic left ~245,000 objects of cyclic garbage
    (kafka-python's timeout exceptions and their tracebacks) that one 60-190 ms collection then freed:
    a start-up cost, which set the p99 of a 10 s run at low load when it was counted."""
    warm = _offer(bootstrap, topic_in, x, per_request, rate_rps, WARMUP_S, "warm")
    requests.wait(warm, 60)
    answers.wait(warm, 60)
    n = _offer(bootstrap, topic_in, x, per_request, rate_rps, seconds, "lat")
    return _step(requests.wait(warm + n, 60), answers.wait(warm + n, 60), "lat", n)["latency_ms"]


def pipeline_at_load(
    bootstrap: str,
    det,
    det_path: str,
    x: np.ndarray,
    per_request: int,
    rate_rps: float,
    seconds: float,
    max_batch: int,
    buckets: list[int],
    delay_ms: float = 5.0,
    fetch_wait_ms: int = 20,
    pipeline_cls=None,
):
    """Run a pipeline (of ``pipeline_cls``, to instrument it) at a fixed offered load of npy requests.
    Returns the stopped pipeline and each request's latency in ms (answer minus request CreateTime)."""
    cfg, pipeline, thread, requests, answers = _pipeline_under_load(
        bootstrap, det, det_path, max_batch, buckets, delay_ms, fetch_wait_ms, pipeline_cls
    )
    try:
        return pipeline, _measure(
            bootstrap, cfg.kafka.input_topic, requests, answers, x, per_request, rate_rps, seconds
        )
    finally:
        pipeline.stop()
        thread.join(60)


def latency(
    bootstrap: str,
    det,
    det_path: str,
    x: np.ndarray,
    per_request: int,
    rate_rps: float,
    seconds: float,
    max_batch: int = 256,
    buckets: list[int] | None = None,
    delay_ms: float = 5.0,
    fetch_wait_ms: int = 20,
) -> dict:
    """Added latency at a fixed offered load: the pipeline vs the pass-through loop, same load, same records (npy).

    fetch_wait_ms is the same for both: the embedded broker sleeps out every long poll, adding a
    uniform 0..fetch_wait_ms delay per record to both runs. Shorter waits cut that noise at low load
    but cost CPU (more empty fetches) that the 2-core machine lacks at higher loads.
    """
    buckets = buckets or BatchingConfig().bucket_sizes
    tag = uuid.uuid4().hex[:6]
    topic_in, topic_out = f"lpt-in-{tag}", f"lpt-out-{tag}"
    _ensure(bootstrap, topic_in, topic_out)
    pt = PassThrough(bootstrap, topic_in, topic_out, fetch_wait_ms)
    pt.start()
    pt.ready.wait(30)
    base = _measure(
        bootstrap,
        topic_in,
        TopicReader(bootstrap, topic_in),
        TopicReader(bootstrap, topic_out),
        x,
        per_request,
        rate_rps,
        seconds,
    )
    pt.halt.set()
    pt.join(30)

    pipeline, lat = pipeline_at_load(
        bootstrap, det, det_path, x, per_request, rate_rps, seconds, max_batch, buckets, delay_ms, fetch_wait_ms
    )
    typical = max(1, min(max_batch, round(rate_rps * per_request * (delay_ms / 1000.0 + 0.02))))
    (lane,) = pipeline.path.lanes
    scorer = lane.detector.scorer  # the run's own scorer, already traced for every bucket
    xb = x[:typical]
    scorer(xb)
    t0 = time.perf_counter()
    for _ in range(20):
        scorer(xb)
    batch_ms = (time.perf_counter() - t0) / 20 * 1000
    p = {q: float(np.percentile(lat, q)) for q in (50, 99)}
    b = {q: float(np.percentile(base, q)) for q in (50, 99)}
    return {
        "rate_rps": rate_rps,
        "per_request": per_request,
        "max_batch_size": max_batch,
        "answered": len(lat),
        "p50_ms": p[50],
        "p99_ms": p[99],
        "passthrough_p50_ms": b[50],
        "passthrough_p99_ms": b[99],
        "added_p50_ms": p[50] - b[50],
        "added_p99_ms": p[99] - b[99],
        "max_batch_delay_ms": delay_ms,
        "batch_compute_ms": batch_ms,
        "typical_batch": typical,
        "target_added_p99_ms": delay_ms + 2 * batch_ms,
    }
