"""Helpers for broker-backed tests: produce requests, collect answers, run a pipeline in a thread."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer

from adae_stream.codecs import encode_request
from adae_stream.config import Config, load_config


def make_config(bootstrap: str, detector_path: str, **sections) -> Config:
    """A config on fresh topics and group, with the test-friendly group timings from the brief."""
    tag = uuid.uuid4().hex[:8]
    kafka = {
        "bootstrap_servers": bootstrap,
        "input_topic": f"in-{tag}",
        "output_topic": f"out-{tag}",
        "dead_letter_topic": f"dlq-{tag}",
        "group_id": f"g-{tag}",
        "partitions": 3,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "connect_timeout_s": 20,
    }
    kafka.update(sections.pop("kafka", {}))
    # jit_compile false unless a test sets it: the default (auto) compiles XLA per bucket at every detector
    # load, 2-3 s more each, and the broker tests load many (the TF suite took 17m16s locally with auto
    # everywhere, against 15m12s-16m52s before it); auto's own tests are tests/fast/test_compile_choice.py,
    # and the demo's test runs the default
    overrides = {
        "kafka": kafka,
        "detector": {"path": str(detector_path), "jit_compile": False},
        "metrics": {"enabled": False},
    }
    for k, v in sections.items():
        overrides[k] = {**overrides.get(k, {}), **v} if isinstance(v, dict) else v
    return load_config(None, environ={}, overrides=overrides)


def create_topic(bootstrap: str, topic: str, partitions: int = 3, **configs: str) -> None:
    """A topic made outside the service (the service finds it and leaves it as it is), e.g. with a
    max.message.bytes of its own: create_topic(b, t, max_message_bytes="1048576")."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        topic_configs = {k.replace("_", "."): v for k, v in configs.items()}
        admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=topic_configs)])
    finally:
        admin.close()


def producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, batch_size=1024 * 1024, max_request_size=64 * 1024 * 1024
    )


def produce_requests(
    bootstrap: str, topic: str, X: np.ndarray, fmt: str, batch: int, prefix: str = "r", keys: bool = True
) -> dict[str, np.ndarray]:
    """Send X in requests of `batch` instances; returns {request_id: instances}."""
    p = producer(bootstrap)
    sent, futures = {}, []
    for i in range(0, len(X), batch):
        rid = f"{prefix}-{i // batch}"
        payload, headers = encode_request(X[i : i + batch], fmt, rid)
        futures.append(p.send(topic, value=payload, key=rid.encode() if keys else None, headers=headers))
        sent[rid] = X[i : i + batch]
    p.flush()
    for future in futures:
        future.get(30)  # a request the broker refused (over the topic's limit) fails the test here
    p.close()
    return sent


def _read_until(
    bootstrap: str, topic: str, stop: Callable[[list, float], bool], timeout_s: float, **consumer: Any
) -> list:
    """Records of ``topic`` from its start until ``stop(records, seconds since the last record)`` says so,
    or ``timeout_s`` passed."""
    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=64 * 1024 * 1024,
        **consumer,
    )
    out: list = []
    last = time.monotonic()
    deadline = last + timeout_s
    try:
        while time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200).values():
                out.extend(recs)
                last = time.monotonic()
            if stop(out, time.monotonic() - last):
                break
    finally:
        c.close()
    return out


def collect(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0, idle_s: float | None = None) -> list:
    """Read records from the start of `topic` until `expected` arrived (or timeout / idle)."""
    return _read_until(
        bootstrap, topic, lambda out, idle: len(out) >= expected or (idle_s is not None and idle > idle_s), timeout_s
    )


def read_settled(
    bootstrap: str,
    topic: str,
    done: Callable[[list], bool],
    isolation_level: str = "read_uncommitted",
    timeout_s: float = 90.0,
    quiet_s: float = 2.0,
) -> list:
    """Every record of ``topic`` as a reader with ``isolation_level`` sees it: read until ``done(records)``
    and then ``quiet_s`` without more, so late duplicates show too (or until timeout_s)."""
    return _read_until(
        bootstrap, topic, lambda out, idle: done(out) and idle > quiet_s, timeout_s, isolation_level=isolation_level
    )


@dataclass
class RunningPipeline:
    pipeline: object
    thread: threading.Thread
    result: dict = field(default_factory=dict)

    def stop(self, timeout: float = 60.0) -> int:
        self.pipeline.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "pipeline did not stop"
        return self.result.get("rc")


def start_pipeline(cfg: Config, scorer, metrics=None) -> RunningPipeline:
    from adae_stream.stream.app import Pipeline

    pipeline = Pipeline(cfg, scorer, metrics, cfg.kafka.bootstrap_servers)
    holder: dict = {}

    def target():
        holder["rc"] = pipeline.run()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return RunningPipeline(pipeline, t, holder)
