"""The Kafka clients and topics the pipeline uses, built from the config in one place.

Size limits are set here together, because they must agree: an answer may be as large as
``kafka.max_message_bytes`` (the output topic's limit), and a dead-letter record carries the original
record plus error headers, so its topic allows DEAD_LETTER_OVERHEAD more.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from adae_stream.clients.fixes import forget_refused_txn_offsets, keep_pending_join_visible
from adae_stream.config import Config, KafkaConfig, input_topics, kafka_security_kwargs, linger_ms

log = logging.getLogger(__name__)

DEAD_LETTER_OVERHEAD = 64 * 1024  # room for the error headers and coordinates beside the original record


def dead_letter_limit(kafka: KafkaConfig) -> int:
    """The largest dead-letter record the service writes (and its topic's max.message.bytes)."""
    return kafka.max_message_bytes + DEAD_LETTER_OVERHEAD


def topic_limits(kafka: KafkaConfig) -> dict[str, int]:
    """max.message.bytes for each topic the service creates. A monitor-only tap (kafka.publish flagged or
    nothing) never creates its input topics: they belong to the platform it taps."""
    limits = {topic: kafka.max_message_bytes for topic in input_topics(kafka)} if kafka.publish == "answers" else {}
    if kafka.publish != "nothing":
        limits[kafka.output_topic] = kafka.max_message_bytes
    limits[kafka.dead_letter_topic] = dead_letter_limit(kafka)
    for topic in (
        kafka.feedback_topic,
        kafka.flagged_topic,
        kafka.shadow_topic,
        kafka.evidence_topic,
        kafka.summary_topic,
    ):
        if topic is not None:
            limits[topic] = kafka.max_message_bytes
    return limits


def ensure_topics(cfg: Config, bootstrap: str, bootstrap_timeout_ms: int = 30000) -> None:
    """Create the topics of topic_limits() that are missing (kafka.create_topics): input (not for a
    monitor-only tap), output, dead-letter, feedback, flagged, shadow, evidence and summaries, each with a
    max.message.bytes that fits what the service writes to it (brokers default to 1 MiB)."""
    kafka = cfg.kafka
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=f"{kafka.client_id}-admin",
        bootstrap_timeout_ms=bootstrap_timeout_ms,
        **kafka_security_kwargs(kafka),
    )
    try:
        existing = set(admin.list_topics())
        for topic, limit in topic_limits(kafka).items():
            if topic in existing:
                continue
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            topic,
                            kafka.partitions,
                            kafka.replication_factor,
                            topic_configs={"max.message.bytes": str(limit)},
                        )
                    ]
                )
                log.info("created topic %s (%d partitions, max.message.bytes %d)", topic, kafka.partitions, limit)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def written_topics(kafka: KafkaConfig) -> list[str]:
    """The topics the service writes to, whose broker-side size limit bounds what it may send there."""
    topics = [kafka.output_topic] if kafka.publish != "nothing" else []
    copies = (
        kafka.dead_letter_topic,
        kafka.flagged_topic,
        kafka.shadow_topic,
        kafka.evidence_topic,
        kafka.summary_topic,
    )
    return topics + [t for t in copies if t is not None]


def read_topic_limits(cfg: Config, bootstrap: str, bootstrap_timeout_ms: int) -> dict[str, int]:
    """max.message.bytes of the topics the service writes, as the broker has them (DescribeConfigs).

    A topic made elsewhere may allow less than kafka.max_message_bytes; checking against the smaller
    limit turns what would be a broker rejection (which, under exactly_once, poisons the whole open
    transaction) into a dead letter with reason answer_too_large. A topic the broker does not describe
    (missing yet, not authorised for DESCRIBE_CONFIGS, a broker without the API) keeps the config's limit,
    with a warning.
    """
    kafka = cfg.kafka
    topics = written_topics(kafka)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=f"{kafka.client_id}-admin",
        bootstrap_timeout_ms=bootstrap_timeout_ms,
        **kafka_security_kwargs(kafka),
    )
    limits: dict[str, int] = {}
    # a topic created a moment ago may not be described yet (its error code is not surfaced by
    # kafka-python): asked again for up to the attempt's bootstrap timeout
    deadline = time.monotonic() + bootstrap_timeout_ms / 1000.0
    try:
        while True:
            missing = [t for t in topics if t not in limits]
            resources = [ConfigResource(ConfigResourceType.TOPIC, t, configs=["max.message.bytes"]) for t in missing]
            described = admin.describe_configs(resources, config_filter="all").get("topic", {})
            for topic in missing:
                value = described.get(topic, {}).get("max.message.bytes", {}).get("value")
                if value is not None:
                    limits[topic] = int(value)
            if len(limits) == len(topics) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    except (KafkaError, ValueError) as exc:  # ValueError: kafka-python's refusal of an unknown API version
        log.warning("could not read max.message.bytes of %s: %r; using kafka.max_message_bytes", topics, exc)
        return {}
    finally:
        admin.close()
    for topic in topics:
        if topic not in limits:
            log.warning("the broker did not describe max.message.bytes of %s; using the config's limit", topic)
    return limits


def plain_producer(kafka: KafkaConfig, bootstrap: str, linger_ms: int = 0) -> KafkaProducer:
    """The one producer for what is not the service (``adae-stream produce``, the demo's traffic and
    labels): no transactions, requests up to the service's own ``kafka.max_message_bytes``."""
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=linger_ms,
        batch_size=1024 * 1024,
        max_request_size=kafka.max_message_bytes,
        **kafka_security_kwargs(kafka),
    )


def plain_reader(
    kafka: KafkaConfig, bootstrap: str, *topics: str, from_beginning: bool = True, **extra: Any
) -> KafkaConsumer:
    """The one reader outside any group (``adae-stream tail``, the demo's checks, the feedback join's tail):
    commits nothing; fetches sized for the largest record the service writes (a dead letter)."""
    return KafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=max(1024 * 1024, dead_letter_limit(kafka)),
        **extra,
        **kafka_security_kwargs(kafka),
    )


def _common(kafka: KafkaConfig, bootstrap: str, bootstrap_timeout_ms: int) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap,
        "client_id": kafka.client_id,
        "bootstrap_timeout_ms": bootstrap_timeout_ms,
        **kafka_security_kwargs(kafka),
    }


# A transaction begun right after a commit is often refused with CONCURRENT_TRANSACTIONS while the
# coordinator still writes the last one's markers; kafka-python 3.0.12 retries it after a plain sleep of
# retry_backoff_ms (default 100). Committing as soon as the loop is idle (kafka.commit_when_idle) makes
# that the common case under load. The exactly_once pass-through at 433 / 1,083 requests/s on Apache
# Kafka 4.1 (answer p50, alternating runs): 100 ms 190-222 / 155-186 ms; 10 ms 48-76 / 28-50; 5 ms
# 40-56 / 31-43; 2 ms 30-41 / 22-30. 5 ms: within the noise of 2 with fewer retries to a busy broker.
TRANSACTION_RETRY_BACKOFF_MS = 5


def build_producer(cfg: Config, bootstrap: str, bootstrap_timeout_ms: int) -> KafkaProducer:
    """An idempotent producer (acks=all, one request in flight); transactional under exactly_once.

    Zombie fencing comes from the consumer group metadata sent with the offsets (KIP-447), whatever the
    transactional id; a stable ``kafka.transactional_id`` also lets a restart abort the transaction its
    crashed predecessor left open (InitProducerId bumps the epoch), instead of waiting for its timeout.
    """
    kafka = cfg.kafka
    delivery_ms = int(kafka.delivery_timeout_s * 1000)
    extra: dict[str, Any] = {}
    if cfg.delivery == "exactly_once":
        extra = {
            "transactional_id": kafka.transactional_id
            or f"{kafka.client_id}-{kafka.group_id}-{socket.gethostname()}-{os.getpid()}",
            "transaction_timeout_ms": kafka.transaction_timeout_ms,
            "enable_idempotence": True,
            "retry_backoff_ms": TRANSACTION_RETRY_BACKOFF_MS,
        }
    producer = KafkaProducer(
        acks="all",
        linger_ms=linger_ms(cfg),
        batch_size=1024 * 1024,
        max_request_size=max(dead_letter_limit(kafka) + 1024, 1024 * 1024),
        compression_type=kafka.compression_type,
        delivery_timeout_ms=delivery_ms,
        request_timeout_ms=min(30000, delivery_ms // 2),
        max_in_flight_requests_per_connection=1,
        max_block_ms=delivery_ms,
        **extra,
        **_common(kafka, bootstrap, bootstrap_timeout_ms),
    )
    if cfg.delivery == "exactly_once":
        forget_refused_txn_offsets(producer)
        producer.init_transactions()
    return producer


def build_consumer(cfg: Config, bootstrap: str, bootstrap_timeout_ms: int) -> KafkaConsumer:
    """A consumer that commits only explicitly; read_committed under exactly_once; the join race fixed."""
    kafka = cfg.kafka
    consumer = KafkaConsumer(
        group_id=kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset=kafka.auto_offset_reset,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        max_poll_records=kafka.max_poll_records,
        max_partition_fetch_bytes=max(1024 * 1024, dead_letter_limit(kafka)),
        fetch_max_bytes=max(50 * 1024 * 1024, 2 * kafka.max_message_bytes),
        isolation_level="read_committed" if cfg.delivery == "exactly_once" else "read_uncommitted",
        **_common(kafka, bootstrap, bootstrap_timeout_ms),
    )
    keep_pending_join_visible(consumer)
    return consumer


class KafkaClients:
    """The service's clients from kafka-python, as the config says (adae_stream.clients.Clients)."""

    def __init__(self, cfg: Config, bootstrap: str) -> None:
        self.cfg, self.bootstrap = cfg, bootstrap

    def ensure_topics(self, timeout_ms: int) -> None:
        if self.cfg.kafka.create_topics:
            ensure_topics(self.cfg, self.bootstrap, timeout_ms)

    def topic_limits(self, timeout_ms: int) -> dict[str, int]:
        return read_topic_limits(self.cfg, self.bootstrap, timeout_ms)

    def producer(self, timeout_ms: int) -> KafkaProducer:
        return build_producer(self.cfg, self.bootstrap, timeout_ms)

    def consumer(self, timeout_ms: int) -> KafkaConsumer:
        return build_consumer(self.cfg, self.bootstrap, timeout_ms)

    def reader(self, client_id: str, isolation_level: str) -> KafkaConsumer:
        return plain_reader(self.cfg.kafka, self.bootstrap, client_id=client_id, isolation_level=isolation_level)
