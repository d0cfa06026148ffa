"""The Kafka clients and topics the pipeline uses, built from the config in one place.

Size limits are set here together, because they must agree: an answer may be as large as
``kafka.max_message_bytes`` (the output topic's limit), and a dead-letter record carries the original
record plus error headers, so its topic allows DEAD_LETTER_OVERHEAD more.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from adae_stream.config import Config, KafkaConfig, input_topics, kafka_security_kwargs

log = logging.getLogger(__name__)

DEAD_LETTER_OVERHEAD = 64 * 1024  # room for the error headers and coordinates beside the original record


def dead_letter_limit(k: KafkaConfig) -> int:
    """The largest dead-letter record the service writes (and its topic's max.message.bytes)."""
    return k.max_message_bytes + DEAD_LETTER_OVERHEAD


def topic_limits(k: KafkaConfig) -> dict[str, int]:
    """max.message.bytes for each topic the service creates. A monitor-only tap (kafka.publish flagged or
    nothing) never creates its input topics: they belong to the platform it taps."""
    limits = {topic: k.max_message_bytes for topic in input_topics(k)} if k.publish == "answers" else {}
    if k.publish != "nothing":
        limits[k.output_topic] = k.max_message_bytes
    limits[k.dead_letter_topic] = dead_letter_limit(k)
    return limits


def ensure_topics(cfg: Config, bootstrap: str, bootstrap_timeout_ms: int = 30000) -> None:
    """Create the input, output and dead-letter topics if missing (kafka.create_topics), each with a
    max.message.bytes that fits what the service writes to it (brokers default to 1 MiB)."""
    k = cfg.kafka
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{k.client_id}-admin",
                             bootstrap_timeout_ms=bootstrap_timeout_ms, **kafka_security_kwargs(k))
    try:
        existing = set(admin.list_topics())
        for topic, limit in topic_limits(k).items():
            if topic in existing:
                continue
            try:
                admin.create_topics([NewTopic(topic, k.partitions, k.replication_factor,
                                              topic_configs={"max.message.bytes": str(limit)})])
                log.info("created topic %s (%d partitions, max.message.bytes %d)", topic, k.partitions, limit)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def _common(k: KafkaConfig, bootstrap: str, bootstrap_timeout_ms: int) -> dict[str, Any]:
    return {"bootstrap_servers": bootstrap, "client_id": k.client_id, "bootstrap_timeout_ms": bootstrap_timeout_ms,
            **kafka_security_kwargs(k)}


def build_producer(cfg: Config, bootstrap: str, bootstrap_timeout_ms: int) -> KafkaProducer:
    """An idempotent producer (acks=all, one request in flight); transactional under exactly_once.

    The transactional id is unique per process: zombie fencing comes from the consumer group metadata
    sent with the offsets (KIP-447), not from a static id.
    """
    k = cfg.kafka
    delivery_ms = int(k.delivery_timeout_s * 1000)
    extra: dict[str, Any] = {}
    if cfg.delivery == "exactly_once":
        extra = {"transactional_id": f"{k.client_id}-{k.group_id}-{socket.gethostname()}-{os.getpid()}",
                 "enable_idempotence": True}
    producer = KafkaProducer(
        acks="all", linger_ms=k.linger_ms, batch_size=1024 * 1024,
        max_request_size=max(dead_letter_limit(k) + 1024, 1024 * 1024),
        compression_type=k.compression_type, delivery_timeout_ms=delivery_ms,
        request_timeout_ms=min(30000, delivery_ms // 2), max_in_flight_requests_per_connection=1,
        max_block_ms=delivery_ms, **extra, **_common(k, bootstrap, bootstrap_timeout_ms),
    )
    if cfg.delivery == "exactly_once":
        producer.init_transactions()
    return producer


def build_consumer(cfg: Config, bootstrap: str, bootstrap_timeout_ms: int) -> KafkaConsumer:
    """A consumer that commits only explicitly; read_committed under exactly_once."""
    k = cfg.kafka
    return KafkaConsumer(
        group_id=k.group_id, enable_auto_commit=False, auto_offset_reset=k.auto_offset_reset,
        session_timeout_ms=k.session_timeout_ms, heartbeat_interval_ms=k.heartbeat_interval_ms,
        fetch_max_wait_ms=k.fetch_max_wait_ms, max_poll_records=k.max_poll_records,
        max_partition_fetch_bytes=max(1024 * 1024, dead_letter_limit(k)),
        fetch_max_bytes=max(50 * 1024 * 1024, 2 * k.max_message_bytes),
        isolation_level="read_committed" if cfg.delivery == "exactly_once" else "read_uncommitted",
        **_common(k, bootstrap, bootstrap_timeout_ms),
    )
