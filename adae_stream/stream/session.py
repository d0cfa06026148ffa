"""The Kafka session: clients built with backoff, the subscription (topics or a pattern), close.

The clients exist from a successful connect until close; the loop reaches them through properties that
fail loudly when used outside that span.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from adae_stream.clients import Clients, Consumer, KafkaConfigurationError, KafkaError, Producer
from adae_stream.config import Config, input_topics
from adae_stream.errors import PipelineError
from adae_stream.stream.login_refusals import LoginRefusals

log = logging.getLogger(__name__)
T = TypeVar("T")

TOPIC_CHECK_S = 10.0  # how often kafka.input_pattern is matched against the cluster's topics again


def require_connected(client: T | None, name: str) -> T:
    if client is None:
        raise PipelineError(f"the pipeline's {name} is used while it is not connected to Kafka (a bug)")
    return client


class KafkaSession:
    def __init__(self, cfg: Config, bootstrap: str, clients: Clients, set_kafka_up: Callable[[bool], None]) -> None:
        self.cfg = cfg
        self.kafka = cfg.kafka
        self.bootstrap = bootstrap
        self.clients = clients
        self.set_kafka_up = set_kafka_up
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self.subscribed: set[str] = set()
        self.topic_limits: dict[str, int] = {}  # max.message.bytes the broker has for the topics we write
        self._last_topic_check = 0.0

    @property
    def consumer(self) -> Consumer:
        return require_connected(self._consumer, "consumer")

    @consumer.setter
    def consumer(self, consumer: Consumer) -> None:
        self._consumer = consumer

    @property
    def producer(self) -> Producer:
        return require_connected(self._producer, "producer")

    @property
    def connected(self) -> bool:
        """Between a successful connect and close (the consumer is built last)."""
        return self._consumer is not None

    def connect(self, stop: threading.Event, then: Callable[[], None]) -> bool:
        """Build the clients, then run ``then`` (what is built on them), retrying both with exponential
        backoff until kafka.connect_timeout_s. False if stopped meanwhile."""
        with LoginRefusals() as refusals:
            return self._connect(stop, then, refusals)

    def _connect(self, stop: threading.Event, then: Callable[[], None], refusals: LoginRefusals) -> bool:
        deadline = time.monotonic() + self.kafka.connect_timeout_s
        delay = 0.5
        while not stop.is_set():
            # each attempt may wait for the broker at most 3 s, so retries (and their log lines) keep coming
            attempt_ms = int(1000 * max(0.5, min(3.0, deadline - time.monotonic())))
            try:
                self.clients.ensure_topics(attempt_ms)
                self.topic_limits = self.clients.topic_limits(attempt_ms)
                self._producer = self.clients.producer(attempt_ms)
                self._consumer = self.clients.consumer(attempt_ms)
                then()
                self.set_kafka_up(True)
                log.info(
                    "connected to Kafka at %s; consuming %s as group %s; publishing %s",
                    self.bootstrap,
                    self.kafka.input_pattern or ", ".join(input_topics(self.kafka)),
                    self.kafka.group_id,
                    self.kafka.publish,
                )
                return True
            except KafkaConfigurationError as exc:
                self.close()
                raise PipelineError(f"invalid Kafka client settings: {exc}") from exc
            except (KafkaError, OSError) as exc:
                self.set_kafka_up(False)
                self.close()
                refused = refusals.take()
                if refused is not None:
                    raise PipelineError(
                        f"Kafka at {self.bootstrap} refused the login of {self.kafka.sasl_plain_username!r} "
                        f"({self.kafka.security_protocol}, {self.kafka.sasl_mechanism}): {refused}; check "
                        "kafka.sasl_plain_username and kafka.sasl_plain_password"
                    ) from exc
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PipelineError(
                        f"Kafka at {self.bootstrap} unreachable for {self.kafka.connect_timeout_s:.0f}s "
                        f"(kafka.connect_timeout_s): {exc!r}"
                    ) from exc
                log.warning(
                    "Kafka at %s not reachable (%s); retrying in %.1fs (giving up in %.0fs)",
                    self.bootstrap,
                    type(exc).__name__,
                    min(delay, left),
                    left,
                )
                stop.wait(min(delay, left))
                delay = min(delay * 2, 10.0)
        return False

    def replace_producer(self) -> None:
        """A new producer for one kafka-python left unusable (see Sink.doomed). Under exactly_once it has
        the same transactional id, so its InitProducerId fences the old one and aborts what it left open."""
        old = self.producer
        try:
            old.close(timeout=0)
        except Exception as exc:
            log.warning("closing the failed producer: %s", exc)
        self._producer = self.clients.producer(int(self.kafka.connect_timeout_s * 1000))
        log.info("producer replaced after a broker rejection")

    def subscribe(self, listener: Any) -> None:
        """Subscribe to the input topics; for kafka.input_pattern, to the topics that match it now.

        The pattern is resolved here, against the cluster's topic list, rather than by kafka-python's own
        pattern subscription: in 3.0.12 that one asks for a metadata refresh at the start of every poll()
        and, measured against the embedded broker, never completed the group join (no partitions after
        20 s with polls of 10 ms to 3 s). An explicit list joins like any other subscription.
        """
        self._last_topic_check = time.monotonic()
        if self.kafka.input_pattern:
            pattern = re.compile(self.kafka.input_pattern)
            try:
                topics = {t for t in self.consumer.topics() if pattern.match(t)}
            except KafkaError as exc:
                log.warning(
                    "could not list topics for kafka.input_pattern: %s; keeping %s", exc, sorted(self.subscribed)
                )
                return
        else:
            topics = set(input_topics(self.kafka))
        if topics and self.kafka.feedback_topic:
            topics.add(self.kafka.feedback_topic)
        if topics == self.subscribed:
            return
        if not topics:
            log.warning(
                "no topic matches kafka.input_pattern %r yet; checking every %.0f s",
                self.kafka.input_pattern,
                TOPIC_CHECK_S,
            )
            return
        log.info("subscribing to %s", ", ".join(sorted(topics)))
        self.consumer.subscribe(sorted(topics), listener=listener)
        self.subscribed = topics

    def pattern_check_due(self) -> bool:
        return bool(self.kafka.input_pattern) and time.monotonic() - self._last_topic_check > TOPIC_CHECK_S

    def broker_connected(self) -> bool:
        """Whether the consumer holds at least one live broker connection (its own connection-count metric)."""
        try:
            connections = self.consumer.metrics().get("consumer-metrics", {}).get("connection-count", 0)
            return bool(connections > 0)
        except KafkaError:
            return False

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as exc:
                log.warning("closing consumer: %s", exc)
            self._consumer = None
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception as exc:
                log.warning("closing producer: %s", exc)
            self._producer = None
