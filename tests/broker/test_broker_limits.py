"""The broker's own size limits, on Apache Kafka (Tansu does not enforce max.message.bytes).

- At start the service reads the max.message.bytes of the topics it writes (DescribeConfigs): an output
  topic made elsewhere with a smaller limit than kafka.max_message_bytes gets ``answer_too_large`` dead
  letters, never a broker rejection.
- A rejection that still happens (the limit lowered while the service runs) costs its record only, in
  both delivery modes: dead-lettered once, every other request answered, nothing loops. It leaves
  kafka-python's producer unable to go on with the work in flight (an abortable transaction, or a fatal
  idempotent producer), so that work is redone without it: under exactly_once each answer is visible
  once; under at_least_once the answers acked after the rejected one in its partition may come twice.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from adae_stream.codecs import decode_response
from tests.kafka_helpers import create_topic, make_config, produce_requests, read_settled, start_pipeline
from tests.waiting import wait_for

LIMIT = 64 * 1024  # an output topic's limit: a one-instance answer is < 1 KiB, a 4,000-instance one > 100 KiB
BIG = 4000
INPUT_LIMIT = 8 * 1024 * 1024  # the 4,000-instance request is ~2.5 MB of JSON


def records(bootstrap: str, topic: str, isolation: str, expected: int, timeout_s: float = 60.0) -> list:
    return read_settled(bootstrap, topic, lambda got: len(got) >= expected, isolation, timeout_s)


def many(X: np.ndarray) -> np.ndarray:
    """BIG instances (the test split repeated): a request whose answer is over LIMIT."""
    return np.resize(X, (BIG, *X.shape[1:]))


def set_limit(bootstrap: str, topic: str, limit: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(limit)})

    def applied() -> bool:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
        return described["topic"][topic]["max.message.bytes"]["value"] == str(limit)

    try:
        admin.alter_configs([resource])
        wait_for(applied, 30, f"max.message.bytes={limit} on {topic}")
    finally:
        admin.close()


def check_outcome(bootstrap, cfg, small: dict, big_id: str, reason: str) -> None:
    isolation = "read_committed" if cfg.delivery == "exactly_once" else "read_uncommitted"
    answers = records(bootstrap, cfg.kafka.output_topic, isolation, len(small))
    dead = records(bootstrap, cfg.kafka.dead_letter_topic, isolation, 1)
    answered = Counter(decode_response(r.value, r.headers)["id"] for r in answers)
    assert set(answered) == set(small), set(small) - set(answered)
    if cfg.delivery == "exactly_once":
        assert max(answered.values()) == 1, answered.most_common(3)
    assert len(dead) == 1, [dict(r.headers).get("error-reason") for r in dead]
    headers = dict(dead[0].headers)
    assert dead[0].key == big_id.encode()
    assert headers["error-reason"] == reason.encode(), headers["error-message"][:300]


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_an_output_topic_with_a_smaller_limit_is_read_at_start(
    apache_kafka, digits_setup, digits_scorer, digits_detector_path, delivery
):
    bootstrap, X = apache_kafka.bootstrap, digits_setup["Xte"]
    cfg = make_config(bootstrap, digits_detector_path, delivery=delivery)
    create_topic(bootstrap, cfg.kafka.output_topic, max_message_bytes=str(LIMIT))  # managed elsewhere
    create_topic(bootstrap, cfg.kafka.input_topic, max_message_bytes=str(INPUT_LIMIT))
    small = produce_requests(bootstrap, cfg.kafka.input_topic, X[:40], "v2", batch=1, prefix="small")
    big = produce_requests(bootstrap, cfg.kafka.input_topic, many(X), "v2", batch=BIG, prefix="big")
    run = start_pipeline(cfg, digits_scorer)
    try:
        check_outcome(bootstrap, cfg, small, next(iter(big)), "answer_too_large")
        assert run.pipeline.sink.answer_limit == LIMIT
        assert run.pipeline.failure is None
    finally:
        assert run.stop() == 0


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_a_limit_lowered_while_running_costs_only_its_record(
    apache_kafka, digits_setup, digits_scorer, digits_detector_path, delivery
):
    bootstrap, X = apache_kafka.bootstrap, digits_setup["Xte"]
    cfg = make_config(bootstrap, digits_detector_path, delivery=delivery, kafka={"commit_interval_ms": 1000})
    run = start_pipeline(cfg, digits_scorer)
    try:
        before = produce_requests(bootstrap, cfg.kafka.input_topic, X[:20], "v2", batch=1, prefix="before")
        wait_for(lambda: run.pipeline.stats["ok"] >= len(before), 60, "answers before the change")
        set_limit(bootstrap, cfg.kafka.output_topic, LIMIT)  # the service still checks against 8 MiB
        small = dict(before)
        small.update(produce_requests(bootstrap, cfg.kafka.input_topic, X[20:40], "v2", batch=1, prefix="mid"))
        big = produce_requests(bootstrap, cfg.kafka.input_topic, many(X), "v2", batch=BIG, prefix="big")
        small.update(produce_requests(bootstrap, cfg.kafka.input_topic, X[40:60], "v2", batch=1, prefix="after"))
        check_outcome(bootstrap, cfg, small, next(iter(big)), "rejected")
        assert run.pipeline.failure is None
    finally:
        assert run.stop() == 0
