"""Where each record ends up: its answer on the output topic, or the record itself on the dead-letter topic.

The per-record error policy lives here (README, "Error policy"):
- a failure that belongs to one record (its answer cannot be encoded or is over the output topic's
  limit, the client or broker rejects that record) sends the original record to the dead-letter topic
  with a reason, and the pipeline goes on;
- if the dead-letter topic rejects that record as well, a minimal dead-letter record (no value: the error
  headers and the source coordinates) keeps its coordinates;
- anything else (the broker unreachable past the delivery timeout, authorization, a fenced producer,
  the minimal record rejected too) is a failure of the whole service. The first one is kept as
  ``failure``; the loop stops on it, and the record stays unacked, so its offset is never committed.

Producer callbacks run on kafka-python's I/O thread. They never send from there (a send can block on
buffer memory that only that thread frees): a record to dead-letter after a rejection is queued, and the
loop thread sends it in ``drain()`` or ``flush()``.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from adae_stream.clients import KafkaError, Producer, TopicPartition, TransactionAbortedError
from adae_stream.codecs import RawRecord, Request, encode
from adae_stream.config import KafkaConfig
from adae_stream.errors import FirstFailure
from adae_stream.stream.doom import Doom
from adae_stream.stream.in_flight import InFlight
from adae_stream.stream.offsets import OffsetTracker
from adae_stream.stream.record_limits import dead_letter_record, is_record_error, record_size, write_limits
from adae_stream.stream.telemetry import Metrics

log = logging.getLogger(__name__)

PRODUCER_FLUSH_S = 1.0  # how long kafka-python's own flush() may wait before we wait on each send's future


@dataclass(frozen=True)
class _Delivery:
    """What one send was for: enough to dead-letter the source record if the send fails."""

    record: RawRecord
    reason: str | None = None  # None: an answer (or evidence); else the dead-letter reason
    message: str = ""
    minimal: bool = False
    status: str = "ok"  # what the source record counts as once acked: "ok" (answered) or "feedback"

    def describe(self) -> str:
        where = f"{self.record.topic}-{self.record.partition}@{self.record.offset}"
        if self.reason is None:
            return (
                f"evidence of the label at {where}"
                if self.status == "feedback"
                else f"answer to the request at {where}"
            )
        return f"{'minimal ' if self.minimal else ''}dead-letter record for {where}"


class Sink:
    def __init__(
        self,
        producer: Producer,
        kafka: KafkaConfig,
        tracker: OffsetTracker,
        outcomes: Metrics,
        before_send: Callable[[], None] = lambda: None,
        topic_limits: dict[str, int] | None = None,
        failure: FirstFailure | None = None,
    ) -> None:
        """topic_limits: max.message.bytes the broker has for the topics written (clients.read_topic_limits);
        each record is checked against the smaller of that and the config's limit. failure: the service's
        record of its fatal failure (the Pipeline's), where a send that cannot be settled is written."""
        self.producer, self.kafka, self.tracker, self.outcomes = producer, kafka, tracker, outcomes
        self.before_send = before_send  # opens a transaction under exactly_once
        self.answer_limit, self.copy_limits, self.dead_letter_limit = write_limits(kafka, topic_limits or {})
        self._retries: queue.SimpleQueue[tuple[_Delivery, BaseException]] = queue.SimpleQueue()
        self._failure = failure or FirstFailure()
        self._out_partitions: set[int] = set()
        self._doom = Doom()
        self._in_flight = InFlight()

    @property
    def doomed(self) -> bool:
        """See Doom."""
        return self._doom.doomed

    def committed(self, offsets: Mapping[Hashable, int]) -> None:
        """What the committed offsets cover needs no condemning any more (Doom)."""
        self._doom.forget_committed(offsets)

    def redone(self, producer: Producer, before_send: Callable[[], None]) -> None:
        """The doomed work was aborted or discarded; sends start again, on a new ``producer``. What the old
        one never settled is forgotten with it."""
        self.producer, self.before_send = producer, before_send
        self._in_flight.forget()
        self._doom.clear()

    @property
    def failure(self) -> str | None:
        """The first failure of the whole service, or None."""
        return self._failure.message

    # ------------------------------------------------------------------ answers
    def answer(self, request: Request, result: dict[str, np.ndarray], info: dict[str, Any]) -> bool:
        """Send the answer; False when it cannot go out (dead-lettered instead, now or once the client's
        refusal is drained)."""
        rec = request.record
        condemned = self._doom.condemned((rec.topic, rec.partition, rec.offset))
        if condemned is not None:  # rejected before: its dead letter instead, in every redo until committed
            self._retry(*condemned)
            return False
        try:
            payload, headers = encode(request, result, info)
        except Exception as exc:  # this answer only: e.g. an id no UTF-8 header can carry
            self.dead_letter(rec, "encode", f"the answer could not be encoded: {type(exc).__name__}: {exc}")
            return False
        size = record_size(rec.key, payload, headers)
        if size > self.answer_limit:
            self.dead_letter(
                rec,
                "answer_too_large",
                f"the answer would be {size} bytes, over the output topic's limit of {self.answer_limit} "
                "(the smaller of kafka.max_message_bytes and the topic's max.message.bytes)",
            )
            return False
        return self._send(self.kafka.output_topic, rec.key, payload, headers, _Delivery(rec), keep_partition=True)

    def _out_partition(self, rec: RawRecord) -> int | None:
        """Keyed records follow the key (same partitioner as the input); unkeyed keep the input partition."""
        if rec.key is not None:
            return None
        if not self._out_partitions:  # looked up once (partitions are never removed from a topic)
            self._out_partitions = set(self.producer.partitions_for(self.kafka.output_topic) or ())
        return rec.partition if rec.partition in self._out_partitions else None

    def settle(self, rec: RawRecord, status: str, reason: str | None = None) -> None:
        """A record done without any record of ours, counted under `status`: skipped (a response sharing
        the topic, another model's request), consumed (feedback), or monitored (a monitor-only tap)."""
        self.tracker.done(TopicPartition(rec.topic, rec.partition), rec.offset)
        self.outcomes.request_done(status, reason=reason)

    def evidence(self, topic: str, rec: RawRecord, value: bytes, key: bytes) -> None:
        """A label's paired evidence (feedback/ledger.py): the label's offset is done when the broker has it,
        so under exactly_once it is counted once, in the transaction that consumes the label."""
        self._send(topic, key, value, [], _Delivery(rec, status="feedback"))

    def copy(
        self,
        topic: str,
        rec: RawRecord,
        value: bytes,
        headers: list[tuple[str, bytes]],
        count: Callable[[str], None],
        key: bytes | None = None,
    ) -> None:
        """A copy beside the answer: a flagged capture, or a shadow's predictions. It is not the request's
        outcome: a copy the topic refuses (too large, invalid) is counted (``count("rejected")``) and
        logged, not dead-lettered; a failure of the service is fatal as everywhere else. Its request's
        offset is marked done by the answer alone."""
        what = f"copy to {topic} of {rec.topic}-{rec.partition}@{rec.offset}"
        size = record_size(key, value, headers)
        if size > self.copy_limits.get(topic, self.kafka.max_message_bytes):
            log.warning("%s not sent: %d bytes, over the topic's limit", what, size)
            count("rejected")
            return
        source = (rec.topic, rec.partition, rec.offset)
        if self._doom.uncopyable(topic, source):
            count("rejected")
            return

        def condemn() -> str:  # its own rejection dooms the work in flight, redone without the copy
            self._doom.condemn_copy(topic, source)
            return what

        def failed(exc: BaseException) -> None:
            if not self._doom.settles(exc, condemn):
                self._failure.record(f"publishing the {what} failed: {exc!r}; its offset is not committed")

        try:
            self.before_send()
            future = self.producer.send(topic, value=value, key=key, headers=headers)
        except Exception as exc:
            failed(exc)
            return
        future.add_callback(lambda _md: count("sent"))
        future.add_errback(failed)
        self._in_flight.track(future)

    # ------------------------------------------------------------------ dead letters
    def dead_letter(self, rec: RawRecord, reason: str, message: str, minimal: bool = False) -> None:
        condemned = None if minimal else self._doom.condemned((rec.topic, rec.partition, rec.offset))
        if condemned is not None and condemned[0].reason is not None:  # its full dead letter was rejected
            message = f"{message} (the full dead-letter record was rejected: {condemned[1]!r})"
            minimal = True
        log.warning("dead-letter %s-%d@%d: %s: %s", rec.topic, rec.partition, rec.offset, reason, message[:500])
        key, value, headers = dead_letter_record(rec, reason, message, self.dead_letter_limit, minimal)
        self._send(self.kafka.dead_letter_topic, key, value, headers, _Delivery(rec, reason, message, minimal))

    # ------------------------------------------------------------------ sending and its outcomes
    def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        delivery: _Delivery,
        keep_partition: bool = False,
    ) -> bool:
        """False when the client refused the record before it left (it is settled by _refused)."""
        try:
            self.before_send()
            out_partition = self._out_partition(delivery.record) if keep_partition else None
            future = self.producer.send(topic, value=value, key=key, headers=headers, partition=out_partition)
        except Exception as exc:  # refused before it left: too large, bad content, metadata timeout
            self._refused(delivery, exc)
            return False
        future.add_callback(self._acked, delivery)
        future.add_errback(self._failed, delivery)
        self._in_flight.track(future)
        return True

    def _acked(self, delivery: _Delivery, _metadata: Any) -> None:
        rec = delivery.record
        self.tracker.done(TopicPartition(rec.topic, rec.partition), rec.offset)
        if delivery.status != "ok":
            self.outcomes.request_done(delivery.status)
        elif delivery.reason is None:
            ts = rec.timestamp
            self.outcomes.request_done(
                "ok", end_to_end_s=(time.time() * 1000.0 - ts) / 1000.0 if ts and ts > 0 else None
            )
        else:
            self.outcomes.request_done("dead_letter", reason=delivery.reason)

    def _refused(self, delivery: _Delivery, exc: BaseException) -> None:
        """A send refused by the client before it left (the producer's state is untouched): a record error
        dead-letters the record (from the loop thread, in drain); anything else fails the service."""
        if self._doom.doomed:
            return  # the producer is already failing everything; the redo settles it
        if is_record_error(exc) and not delivery.minimal:
            self._retries.put((delivery, exc))
            return
        self._unsettled(delivery, exc)

    def _failed(self, delivery: _Delivery, exc: BaseException) -> None:
        """A send that failed after it left (kafka-python calls errbacks as f(*args, exception), on its I/O
        thread). A broker's rejection of the record leaves the producer unable to go on (see ``doomed``),
        and kafka-python then fails every other record in flight with the same error. Only the first
        failure is the record's own (its batch is answered before the others are failed): it is
        condemned, and the rest, redone after the abort, are not charged with it."""
        if isinstance(exc, TransactionAbortedError):
            return  # we aborted its transaction (lost partitions, a zombie's commit): whoever aborts redoes it

        def condemn() -> str:  # dead-lettered once, in the redo, in place of what it was for
            rec = delivery.record
            self._doom.condemn((rec.topic, rec.partition, rec.offset), delivery, exc)
            return delivery.describe()

        if self._doom.settles(exc, None if delivery.minimal else condemn):
            return
        self._unsettled(delivery, exc)

    def _unsettled(self, delivery: _Delivery, exc: BaseException) -> None:
        self._failure.record(f"publishing the {delivery.describe()} failed: {exc!r}; its offset is not committed")

    def drain(self) -> None:
        """Dead-letter the records whose send was rejected for a reason of their own (loop thread)."""
        while True:
            try:
                delivery, exc = self._retries.get_nowait()
            except queue.Empty:
                return
            self._retry(delivery, exc)

    def _retry(self, delivery: _Delivery, exc: BaseException) -> None:
        """The record's own rejection: its dead letter instead of its answer, or the minimal dead letter."""
        rec, why = delivery.record, f"{type(exc).__name__}: {exc}"
        if delivery.reason is None:
            what = "evidence of the label" if delivery.status == "feedback" else "answer"
            self.dead_letter(rec, "rejected", f"the {what} was rejected: {why}")
        else:
            self.dead_letter(
                rec,
                delivery.reason,
                f"{delivery.message} (the full dead-letter record was rejected: {why})",
                minimal=True,
            )

    def flush(self, timeout_s: float) -> bool:
        """Wait until every record sent so far, and every dead letter its rejection caused, is acked or
        failed: each by its own future (in_flight.py says why), after kafka-python's flush() has sent what
        lingers. False when some were not settled by the deadline: then the work in flight is doomed (redone
        on a new producer, Outlet.redo_after_rejection), never committed or waited on forever."""
        if self._doom.unsettled:
            return False  # they did not settle by the last deadline: the producer is replaced, not waited on
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.producer.flush(timeout=max(0.0, min(PRODUCER_FLUSH_S, deadline - time.monotonic())))
            except KafkaError as exc:
                log.debug("the producer's flush gave %r; waiting for each record sent instead", exc)
            if not self._in_flight.wait(deadline):
                self._doom.declare(f"{len(self._in_flight)} records sent were not settled within {timeout_s:g} s")
                return False
            if self._retries.empty():
                return True
            self.drain()
