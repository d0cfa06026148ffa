"""delivery: exactly_once — transactional answers + offsets, as far as the embedded broker allows."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from adae_stream.stream.codecs import decode_response
from tests.kafka_helpers import collect, make_config, produce_requests, start_pipeline

pytestmark = pytest.mark.broker


def read_committed(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list:
    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=100,
    )
    out = []
    import time

    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=200).values():
            out.extend(recs)
    c.close()
    return out


def test_transactions_commit_answers_and_offsets_together(broker, digits_setup, digits_scorer, digits_detector_path):
    cfg = make_config(broker.bootstrap, digits_detector_path, delivery="exactly_once")
    first = produce_requests(
        broker.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"][:120], "v2", batch=4, prefix="a"
    )
    run = start_pipeline(cfg, digits_scorer)
    got = read_committed(broker.bootstrap, cfg.kafka.output_topic, len(first))
    assert run.stop() == 0
    stats = run.pipeline.stats
    assert stats["transactions"] >= 1 and stats["ok"] == len(first)
    # offsets were committed through the transactions (the consumer never committed on its own)
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=cfg.kafka.group_id, enable_auto_commit=False)
    ends: dict = {}  # the input topic's end per partition, from its records
    for r in collect(broker.bootstrap, cfg.kafka.input_topic, len(first), timeout_s=30):
        tp = TopicPartition(r.topic, r.partition)
        ends[tp] = max(ends.get(tp, 0), r.offset + 1)
    assert {tp: c.committed(tp) for tp in ends} == ends
    c.close()
    # restart: nothing is redone
    second = produce_requests(
        broker.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"][120:160], "v2", batch=4, prefix="b"
    )
    run = start_pipeline(cfg, digits_scorer)
    got = read_committed(broker.bootstrap, cfg.kafka.output_topic, len(first) + len(second))
    extra = collect(broker.bootstrap, cfg.kafka.output_topic, 10**9, timeout_s=3, idle_s=2)
    assert run.stop() == 0
    ids = sorted(decode_response(r.value, r.headers)["id"] for r in got)
    assert ids == sorted(list(first) + list(second))
    assert len(extra) == len(ids)


def test_embedded_broker_shows_aborted_records_to_read_committed_readers(broker):
    """Evidence for the README: Tansu commits transactions, but does not hide aborted ones.

    This is why at_least_once stays the default, and why exactly_once needs Apache Kafka to be exact.
    If Tansu starts hiding aborted records, this test fails: then update the README.
    """
    topic = "txn-evidence"
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="evidence", enable_idempotence=True)
    p.init_transactions()
    p.begin_transaction()
    p.send(topic, b"committed")
    p.commit_transaction()
    p.begin_transaction()
    p.send(topic, b"aborted")
    p.flush()
    p.abort_transaction()
    p.close()
    values = [r.value for r in read_committed(broker.bootstrap, topic, 2, timeout_s=10)]
    assert b"committed" in values
    assert b"aborted" in values  # a correct broker would hide this one
