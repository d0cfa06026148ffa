"""Stand-ins for what the loop talks to, for tests without a broker.

They implement the client seam (adae_stream.clients: Producer, Consumer, RecordFuture, Clients) on an
in-memory log, so the fast tests build the real Pipeline and drive its real loop step. What they keep of a
broker is what the service relies on, and each is stated where it is kept: per-partition logs with offsets;
transactions whose records a read_committed reader sees only once committed (and never past an open one);
group offsets committed with a transaction or by the consumer; one group member that is assigned every
partition on its first poll and can be evicted (its partitions lost, its generation gone); rejections as
kafka-python reports them (the rejected record fails with an exception of its own, and everything after it
in the doomed transaction, or on the fatal idempotent producer, with that same exception object). Acks
arrive at send by default, or when the test releases them (``hold_acks``).

Also: metrics that record every call of the contract (adae_stream.stream.telemetry.Metrics).
"""

from __future__ import annotations

import asyncio
import inspect
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from adae_stream.clients import (
    ConsumerGroupMetadata,
    KafkaError,
    KafkaTimeoutError,
    OffsetAndMetadata,
    TopicPartition,
)
from adae_stream.stream.telemetry import Metrics


class StandInFuture:
    """adae_stream.clients.RecordFuture: callbacks as ``f(*args, value)``, run at once when already done."""

    def __init__(self) -> None:
        self.is_done = False
        self.value: Any = None
        self.exception: BaseException | None = None
        self._callbacks: list[tuple[Callable[..., Any], tuple]] = []
        self._errbacks: list[tuple[Callable[..., Any], tuple]] = []

    def success(self, value: Any = None) -> StandInFuture:
        self.is_done, self.value = True, value
        for f, args in self._callbacks:
            f(*args, value)
        return self

    def failure(self, exc: BaseException) -> StandInFuture:
        self.is_done, self.exception = True, exc
        for f, args in self._errbacks:
            f(*args, exc)
        return self

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None

    def failed(self) -> bool:
        return self.is_done and self.exception is not None

    def add_callback(self, f: Callable[..., Any], *args: Any) -> StandInFuture:
        if self.succeeded():
            f(*args, self.value)
        elif not self.is_done:
            self._callbacks.append((f, args))
        return self

    def add_errback(self, f: Callable[..., Any], *args: Any) -> StandInFuture:
        if self.failed():
            f(*args, self.exception)
        elif not self.is_done:
            self._errbacks.append((f, args))
        return self

    def add_both(self, f: Callable[..., Any], *args: Any) -> StandInFuture:
        return self.add_callback(f, *args).add_errback(f, *args)

    def __await__(self) -> Generator[Any, None, Any]:
        if self.exception is not None:
            raise self.exception
        return self.value
        yield  # a generator, as __await__ must be


@dataclass
class Stored:
    """One record of a log, with the transaction it belongs to (None: written outside any)."""

    record: SimpleNamespace
    txn: Transaction | None = None


@dataclass
class Transaction:
    state: str = "open"  # open | committed | aborted
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    group: str | None = None


class MemoryBroker:
    """Topics of ``partitions`` partitions each, made on first use; group offsets; injected rejections."""

    def __init__(self, partitions: int = 1) -> None:
        self.partitions = partitions
        self.logs: dict[TopicPartition, list[Stored]] = defaultdict(list)
        self.committed: dict[tuple[str, TopicPartition], int] = {}
        # topic -> errors the broker answers the next sends with (a record error: too large, invalid)
        self.reject: dict[str, list[BaseException]] = defaultdict(list)
        # topic -> an error the client raises at send() itself, before anything leaves
        self.raise_at_send: dict[str, BaseException] = {}

    def partition_for(self, topic: str, key: bytes | None, partition: int | None) -> int:
        if partition is not None:
            return partition
        return zlib.crc32(key) % self.partitions if key is not None else 0

    def append(self, topic: str, partition: int, key, value, headers, txn: Transaction | None) -> SimpleNamespace:
        tp = TopicPartition(topic, partition)
        log = self.logs[tp]
        rec = SimpleNamespace(
            topic=topic,
            partition=partition,
            offset=len(log),
            key=key,
            value=value,
            headers=list(headers or []),
            timestamp=int(time.time() * 1000),
        )
        log.append(Stored(rec, txn))
        return rec

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, headers=()) -> SimpleNamespace:
        """A record from outside the service (a client's request, a label), committed at once."""
        return self.append(topic, self.partition_for(topic, key, None), key, value, headers, None)

    def visible(self, tp: TopicPartition, start: int, committed_only: bool) -> tuple[list[SimpleNamespace], int]:
        """Records from offset ``start`` a reader sees, and the offset it stands at after them: read_committed
        stops at the first record of an open transaction and skips aborted ones."""
        out, offset = [], start
        for stored in self.logs[tp][start:]:
            state = stored.txn.state if stored.txn is not None else "committed"
            if committed_only and state == "open":
                break
            offset += 1
            if state == "aborted" and committed_only:
                continue
            out.append(stored.record)
        return out, offset

    def records(self, topic: str, committed_only: bool = True) -> list[SimpleNamespace]:
        """Every record of the topic a reader sees, partition by partition."""
        out: list[SimpleNamespace] = []
        for tp in sorted(tp for tp in list(self.logs) if tp.topic == topic):
            out += self.visible(tp, 0, committed_only)[0]
        return out

    def end(self, topic: str, partition: int = 0) -> int:
        return len(self.logs[TopicPartition(topic, partition)])


class StandInProducer:
    """adae_stream.clients.Producer on a MemoryBroker."""

    def __init__(self, broker: MemoryBroker | None = None, transactional: bool = False) -> None:
        self.broker = broker or MemoryBroker()
        self.transactional = transactional
        self.hold_acks = False
        self.sent: list[dict] = []  # every send, in order, with its future
        self._held: list[tuple[StandInFuture, SimpleNamespace]] = []
        self._txn: Transaction | None = None
        self._error: BaseException | None = None  # the transaction's abortable error, or the fatal one
        self.closed = False
        self.calls: list[str] = []

    def send(self, topic, value=None, key=None, headers=None, partition=None) -> StandInFuture:
        if topic in self.broker.raise_at_send:
            raise self.broker.raise_at_send.pop(topic)
        if self.transactional and self._txn is None:
            raise KafkaError("send outside a transaction")
        future = StandInFuture()
        p = self.broker.partition_for(topic, key, partition)
        rec = self.broker.append(topic, p, key, value, headers, self._txn)
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers, "future": future})
        if self._error is not None:  # what kafka-python does after a failure: the same error for the rest
            self._drop(rec)
            return future.failure(self._error)
        rejections = self.broker.reject.get(topic)
        if rejections:
            self._error = rejections.pop(0)
            self._drop(rec)
            for held, held_rec in self._held:
                self._drop(held_rec)
                held.failure(self._error)
            self._held = []
            return future.failure(self._error)
        if self.hold_acks:
            self._held.append((future, rec))
            return future
        return future.success(SimpleNamespace(topic=topic, partition=p, offset=rec.offset))

    def _drop(self, rec: SimpleNamespace) -> None:
        """A failed send never reaches readers (outside a transaction it is not appended at all)."""
        log = self.broker.logs[TopicPartition(rec.topic, rec.partition)]
        stored = log[rec.offset]
        if stored.txn is not None:
            stored.txn.state = "aborted" if stored.txn.state == "open" else stored.txn.state
        else:
            stored.txn = Transaction(state="aborted")

    def ack_all(self) -> None:
        held, self._held = self._held, []
        for future, rec in held:
            future.success(SimpleNamespace(topic=rec.topic, partition=rec.partition, offset=rec.offset))

    def flush(self, timeout=None) -> None:
        self.ack_all()

    def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.broker.partitions))

    def init_transactions(self) -> None:
        pass

    def begin_transaction(self) -> None:
        self.calls.append("begin")
        self._txn = Transaction()

    def send_offsets_to_transaction(self, offsets: Mapping[TopicPartition, OffsetAndMetadata], group) -> None:
        if self._txn is None or self._error is not None:
            raise KafkaError(f"cannot send offsets: {self._error!r}")
        self.calls.append(f"offsets {sorted(o.offset for o in offsets.values())} generation {group.generation_id}")
        self._txn.offsets.update({tp: o.offset for tp, o in offsets.items()})
        self._txn.group = group.group_id

    def commit_transaction(self) -> None:
        if self._txn is None or self._error is not None:
            raise KafkaError(f"cannot commit: {self._error!r}")
        self.calls.append("commit")
        self._txn.state = "committed"
        for tp, offset in self._txn.offsets.items():
            self.broker.committed[(self._txn.group or "", tp)] = offset
        self._txn = None

    def abort_transaction(self) -> None:
        self.calls.append("abort")
        if self._txn is not None:
            self._txn.state = "aborted"
        self._txn, self._error = None, None
        for future, _ in self._held:
            future.failure(KafkaError("the transaction was aborted"))
        self._held = []

    def close(self, timeout=None) -> None:
        self.closed = True

    # what the tests read back
    def topics(self) -> list[str]:
        return [s["topic"] for s in self.sent]

    def to(self, topic: str) -> list[dict]:
        """The records sent to ``topic`` and acked."""
        return [s for s in self.sent if s["topic"] == topic and s["future"].succeeded()]


class StandInConsumer:
    """adae_stream.clients.Consumer on a MemoryBroker: a reader outside any group (``assign``), or the one
    member of ``group`` (``subscribe``: every partition of its topics on its first poll)."""

    def __init__(self, broker: MemoryBroker, group: str | None = None, read_committed: bool = False) -> None:
        self.broker, self.group, self.read_committed = broker, group, read_committed
        self.positions: dict[TopicPartition, int] = {}
        self.highwaters: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.generation = 0
        self.committed_failures: dict[TopicPartition, int] = {}  # how many reads of a committed offset fail
        self._topics: list[str] = []
        self._listener: Any = None
        self._evicted = False
        self.closed = False

    # group membership
    def subscribe(self, topics: Sequence[str] = (), pattern=None, listener=None) -> None:
        self._topics, self._listener = list(topics), listener

    def evict(self) -> None:
        """The group moved on without this member (session timeout): its next poll loses its partitions."""
        self._evicted = True
        self.generation = -1

    def _rebalance(self) -> None:
        listener = self._listener
        if self._evicted:
            lost = set(self.positions)
            self._evicted, self.positions = False, {}
            if listener is not None and lost:
                asyncio.run(listener.on_partitions_lost(lost))
            return
        if self._topics and not self.positions:
            self.generation = max(self.generation, 0) + 1
            assigned = {TopicPartition(t, p) for t in self._topics for p in range(self.broker.partitions)}
            self.positions = {tp: self.broker.committed.get((self.group or "", tp), 0) for tp in assigned}
            if listener is not None:
                asyncio.run(listener.on_partitions_assigned(assigned))

    def group_metadata(self) -> ConsumerGroupMetadata:
        member = "member-1" if self.generation >= 0 else ""
        return ConsumerGroupMetadata(self.group, self.generation, member, None)

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    # reading
    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        self._rebalance()
        out: dict[TopicPartition, list[Any]] = {}
        left = max_records if max_records is not None else 10**9
        for tp in sorted(self.positions):
            if tp in self.paused or left <= 0:
                continue
            records, end = self.broker.visible(tp, self.positions[tp], self.read_committed)
            if len(records) > left:
                records = records[:left]
                end = records[-1].offset + 1
            self.positions[tp] = end
            self.highwaters[tp] = len(self.broker.logs[tp])
            if records:
                out[tp] = records
                left -= len(records)
        return out

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        self.positions = {tp: self.positions.get(tp, 0) for tp in partitions}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.broker.partitions))

    def topics(self) -> set[str]:
        return {tp.topic for tp in self.broker.logs}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition] = offset

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions or list(self.positions):
            self.positions[tp] = 0

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp in partitions or list(self.positions):
            self.positions[tp] = len(self.broker.logs[tp])

    def position(self, partition: TopicPartition, timeout_ms=None) -> int | None:
        return self.positions.get(partition)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self.highwaters.get(partition)

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.broker.logs[tp]) for tp in partitions}

    def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]) -> dict[TopicPartition, Any]:
        out = {}
        for tp, ts in timestamps.items():
            first = next((s.record.offset for s in self.broker.logs[tp] if s.record.timestamp >= ts), None)
            out[tp] = SimpleNamespace(offset=first) if first is not None else None
        return out

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused -= set(partitions)

    # offsets
    def committed(self, partition: TopicPartition, timeout_ms=None) -> int | None:
        if self.committed_failures.get(partition, 0) > 0:
            self.committed_failures[partition] -= 1
            raise KafkaTimeoutError("coordinator not available")
        return self.broker.committed.get((self.group or "", partition))

    def commit(self, offsets=None, timeout_ms=None) -> None:
        for tp, o in (offsets or {}).items():
            self.broker.committed[(self.group or "", tp)] = o.offset

    def commit_async(self, offsets=None) -> StandInFuture:
        self.commit(offsets)
        return StandInFuture().success(None)

    def metrics(self) -> dict[str, Any]:
        return {"consumer-metrics": {"connection-count": 1}}

    def close(self, autocommit: bool = True) -> None:
        self.closed = True


class MemoryClients:
    """adae_stream.clients.Clients on a MemoryBroker: the pipeline's producers (transactional under
    exactly_once), its group consumer, and its readers. ``producers`` keeps every producer built."""

    def __init__(self, broker: MemoryBroker, cfg: Any, topic_limits: dict[str, int] | None = None) -> None:
        self.broker, self.cfg = broker, cfg
        self.limits = dict(topic_limits or {})
        self.producer_type: type[StandInProducer] = StandInProducer  # a subclass stands in for a faulty client
        self.producers: list[StandInProducer] = []
        self.consumers: list[StandInConsumer] = []

    def ensure_topics(self, timeout_ms: int) -> None:
        pass

    def topic_limits(self, timeout_ms: int) -> dict[str, int]:
        return dict(self.limits)

    def producer(self, timeout_ms: int) -> StandInProducer:
        self.producers.append(self.producer_type(self.broker, transactional=self.cfg.delivery == "exactly_once"))
        return self.producers[-1]

    def consumer(self, timeout_ms: int) -> StandInConsumer:
        read_committed = self.cfg.delivery == "exactly_once"
        self.consumers.append(StandInConsumer(self.broker, self.cfg.kafka.group_id, read_committed))
        return self.consumers[-1]

    def reader(self, client_id: str, isolation_level: str) -> StandInConsumer:
        return StandInConsumer(self.broker, None, isolation_level == "read_committed")


METRICS_METHODS = tuple(name for name in vars(Metrics) if not name.startswith("_") and callable(getattr(Metrics, name)))


class RecordingMetrics:
    """Every call of the metrics contract, by method name, with all its arguments in the contract's order."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[Any, ...]]] = defaultdict(list)

    def __getattr__(self, name: str) -> Any:
        if name not in METRICS_METHODS:
            raise AttributeError(name)

        signature = inspect.signature(getattr(Metrics, name))

        def record(*args: Any, **kwargs: Any) -> None:  # every argument in the contract's order, defaults too
            bound = signature.bind(None, *args, **kwargs)
            bound.apply_defaults()
            self.calls[name].append(bound.args[1:])

        return record
