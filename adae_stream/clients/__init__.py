"""The one seam around the Kafka client: what the service needs of a producer, a consumer and their
futures, as typed Protocols, with the client's own structs and errors.

kafka-python stays the client. It is imported here and in the two modules beside this one (``build``
makes the clients from the config, ``fixes`` patches two of its bugs) and nowhere else in the package
(tests/fast/test_codebase.py keeps it so). Everything else names ``Producer``, ``Consumer`` and
``RecordFuture`` from here, so mypy checks each call against the methods listed, and the fast tests'
stand-ins (tests/stand_ins.py) implement these Protocols instead of reproducing kafka-python.

Each Protocol lists only the methods the service calls; a method a module starts to use goes here first.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, Protocol

from kafka import AsyncConsumerRebalanceListener as RebalanceListenerBase
from kafka.errors import (
    AuthorizationError,
    CommitFailedError,
    CorruptRecordError,
    InvalidRecordError,
    KafkaConfigurationError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
    TransactionAbortedError,
)
from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata, TopicPartition

__all__ = [
    "AuthorizationError",
    "Clients",
    "CommitFailedError",
    "Consumer",
    "ConsumerGroupMetadata",
    "ConsumerRecord",
    "CorruptRecordError",
    "InvalidRecordError",
    "KafkaConfigurationError",
    "KafkaError",
    "KafkaTimeoutError",
    "MessageSizeTooLargeError",
    "OffsetAndMetadata",
    "Producer",
    "RebalanceListenerBase",
    "RecordFuture",
    "RecordListTooLargeError",
    "SaslAuthenticationFailedError",
    "TopicAlreadyExistsError",
    "TopicPartition",
    "TransactionAbortedError",
]

Headers = Sequence[tuple[str, bytes]]


class RecordFuture(Protocol):
    """A send's outcome: callbacks run on the producer's I/O thread as ``f(*args, value)``."""

    @property
    def is_done(self) -> bool: ...

    def add_callback(self, f: Callable[..., Any], *args: Any) -> Any: ...
    def add_errback(self, f: Callable[..., Any], *args: Any) -> Any: ...
    def add_both(self, f: Callable[..., Any], *args: Any) -> Any: ...
    def succeeded(self) -> bool: ...
    def failed(self) -> bool: ...
    def __await__(self) -> Generator[Any, None, Any]: ...  # inside kafka-python 3's async rebalance hooks


class ConsumerRecord(Protocol):
    """A record as a consumer hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] | None
    timestamp: int


class Producer(Protocol):
    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> RecordFuture: ...

    def flush(self, timeout: float | None = None) -> None: ...
    def partitions_for(self, topic: str) -> set[int] | None: ...
    def init_transactions(self) -> None: ...
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata], group: ConsumerGroupMetadata
    ) -> None: ...
    def commit_transaction(self) -> None: ...
    def abort_transaction(self) -> None: ...
    def close(self, timeout: float | None = None) -> None: ...


class Consumer(Protocol):
    """A group member (the pipeline's) or a reader outside any group (the tails, the CLI's readers)."""

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]: ...
    def subscribe(self, topics: Sequence[str] = (), pattern: str | None = None, listener: Any = None) -> None: ...
    def assign(self, partitions: Sequence[TopicPartition]) -> None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    def topics(self) -> set[str]: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...
    def seek_to_end(self, *partitions: TopicPartition) -> None: ...
    def position(self, partition: TopicPartition, timeout_ms: int | None = None) -> int | None: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]: ...
    def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]) -> dict[TopicPartition, Any]: ...
    def committed(self, partition: TopicPartition, timeout_ms: int | None = None) -> int | None: ...
    def commit(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata] | None = None, timeout_ms: int | None = None
    ) -> None: ...
    def commit_async(self, offsets: Mapping[TopicPartition, OffsetAndMetadata] | None = None) -> RecordFuture: ...
    def group_metadata(self) -> ConsumerGroupMetadata: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def metrics(self) -> dict[str, Any]: ...
    def close(self, autocommit: bool = True) -> None: ...


class Clients(Protocol):
    """Where the pipeline gets its clients and its topics' limits (build.KafkaClients; the fast tests hand
    in stand-ins on an in-memory log). ``timeout_ms`` bounds one attempt to reach the broker."""

    def ensure_topics(self, timeout_ms: int) -> None: ...
    def topic_limits(self, timeout_ms: int) -> dict[str, int]: ...
    def producer(self, timeout_ms: int) -> Producer: ...
    def consumer(self, timeout_ms: int) -> Consumer: ...
    def reader(self, client_id: str, isolation_level: str) -> Consumer: ...
