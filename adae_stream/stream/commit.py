"""What may be committed, and how: at-least-once offset commits, or transactions (exactly_once).

Both commit only what the OffsetTracker calls safe: per partition, the lowest offset whose answer (or
dead-letter record) the broker has not acked yet. The loop calls ``commit`` every turn (it decides
whether the interval has passed, or under exactly_once whether the loop is quiet), ``commit_on_revoke``
from the rebalance listener, and ``abandon`` when partitions are lost or the service failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from adae_stream.clients import CommitFailedError, Consumer, KafkaError, OffsetAndMetadata, Producer, TopicPartition
from adae_stream.errors import PipelineError
from adae_stream.stream.offsets import OffsetTracker
from adae_stream.stream.telemetry import Metrics

log = logging.getLogger(__name__)


class Committer(Protocol):
    def before_send(self) -> None:
        """Called before every send (opens a transaction when there is none)."""

    @property
    def holds_unpublished(self) -> bool:
        """Whether answers sent wait for a commit to become visible (an open transaction): the loop then
        polls without blocking, and commits as soon as it has caught up."""

    def commit(self, force: bool = False, timeout_s: float | None = None, quiet: bool = False) -> None:
        """Commit what is safe, if the commit interval has passed (or force). quiet: the loop has caught up
        (its poll came back short and everything read is scored), which is when an exactly_once commit
        costs no one a wait: what arrives meanwhile goes in the next transaction."""

    async def commit_on_revoke(self) -> None:
        """Commit what is safe before the group moves our partitions (runs on the consumer's I/O loop)."""

    def abandon(self) -> bool:
        """Give up work that was sent but not committed. True when sent answers were discarded with it
        (an aborted transaction), so the loop must redo every assigned partition from its committed offset."""


def _offsets(tracker: OffsetTracker, assigned: Callable[[], Collection[TopicPartition]]) -> dict[Any, int]:
    owned = assigned()
    return {tp: off for tp, off in tracker.to_commit().items() if tp in owned}


def _request(offsets: dict[Any, int]) -> dict[Any, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}


class _Interval:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last = 0.0

    def due(self, force: bool) -> bool:
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return False
        self._last = now
        return True


class AtLeastOnceCommitter:
    """Offsets committed by the consumer: asynchronously in the loop (one at a time, so a broker round trip
    never stalls the records behind it), synchronously at stop."""

    def __init__(
        self,
        consumer: Consumer,
        tracker: OffsetTracker,
        assigned: Callable[[], Collection[TopicPartition]],
        interval_s: float,
        timeout_s: float,
        before_commit: Callable[[], None] = lambda: None,
    ) -> None:
        """before_commit: what each interval's commit in the loop sends first (the batches' summaries)."""
        self.consumer, self.tracker, self.assigned = consumer, tracker, assigned
        self.interval = _Interval(interval_s)
        self.timeout_s = timeout_s
        self.before_commit = before_commit
        self._in_flight = False

    def before_send(self) -> None:
        pass

    @property
    def holds_unpublished(self) -> bool:
        return False  # an answer is visible once acked; offsets only bound what a restart redoes

    def commit(self, force: bool = False, timeout_s: float | None = None, quiet: bool = False) -> None:
        if not self.interval.due(force):
            return
        if not force:  # a forced commit comes after a flush (stop, redo) that nothing may follow
            self.before_commit()
        offsets = _offsets(self.tracker, self.assigned)
        if not offsets:
            return
        if not force:
            if self._in_flight:
                return
            self._in_flight = True
            future = self.consumer.commit_async(_request(offsets))
            future.add_callback(lambda _r: self.tracker.mark_committed(offsets))
            future.add_errback(lambda exc: log.warning("offset commit failed: %s; will retry", exc))
            future.add_both(lambda _r: setattr(self, "_in_flight", False))
            return
        try:
            self.consumer.commit(_request(offsets), timeout_ms=int((timeout_s or self.timeout_s) * 1000))
            self.tracker.mark_committed(offsets)
        except CommitFailedError as exc:
            log.warning("offset commit rejected (group rebalanced): %s; those records will be redelivered", exc)
        except KafkaError as exc:  # includes the commit timeout
            log.warning("offset commit failed: %s", exc)

    async def commit_on_revoke(self) -> None:
        offsets = _offsets(self.tracker, self.assigned)
        if offsets:
            await self.consumer.commit_async(_request(offsets))
            self.tracker.mark_committed(offsets)

    def abandon(self) -> bool:
        return False  # acked answers stay published; their records are redone by the next owner at worst


class TransactionalCommitter:
    """Each commit interval's answers and the input offsets they cover commit in one transaction
    (send_offsets_to_transaction with the group metadata: KIP-447 fencing)."""

    def __init__(
        self,
        producer: Producer,
        consumer: Consumer,
        tracker: OffsetTracker,
        assigned: Callable[[], Collection[TopicPartition]],
        interval_s: float,
        timeout_s: float,
        metrics: Metrics,
        flush: Callable[[float], bool],
        doomed: Callable[[], bool] = lambda: False,
        redo: Callable[[], None] = lambda: None,
        before_commit: Callable[[], None] = lambda: None,
        after_abort: Callable[[], None] = lambda: None,
        when_idle: bool = True,
    ) -> None:
        """flush: waits until every record sent is acked or failed; False if some were not (Sink.flush
        dooms the work then). doomed: whether a record of the open transaction was rejected (Sink.doomed):
        such a transaction is never committed; the loop aborts it and redoes its records. redo: called
        after a transaction was aborted because the group moved on without us (a zombie's commit, KIP-447):
        the pipeline forgets its partitions until the rejoin. before_commit: what the transaction must hold
        before it commits (RecordPath.before_commit: every request read answered, the summaries sent).
        after_abort: forgets what was held for a transaction that is gone (its summaries). when_idle:
        commit as soon as the loop is quiet (kafka.commit_when_idle), else only at the interval."""
        self.producer, self.consumer, self.tracker, self.assigned = producer, consumer, tracker, assigned
        self.flush, self.doomed, self.redo = flush, doomed, redo
        self.before_commit, self.after_abort, self.when_idle = before_commit, after_abort, when_idle
        self.interval = _Interval(interval_s)
        self.timeout_s = timeout_s
        self.metrics = metrics
        self._open = False

    def before_send(self) -> None:
        if not self._open:
            self.producer.begin_transaction()
            self._open = True

    @property
    def holds_unpublished(self) -> bool:
        return self._open and self.when_idle

    def commit(self, force: bool = False, timeout_s: float | None = None, quiet: bool = False) -> None:
        if self.interval.due(force or (quiet and self.holds_unpublished)):
            self._commit_open(timeout_s or self.timeout_s)

    async def commit_on_revoke(self) -> None:
        self._commit_open(self.timeout_s, revoking=True)  # blocks only on the producer's own I/O thread

    def _commit_open(self, timeout_s: float, revoking: bool = False) -> None:
        if not self._open:
            return
        if not revoking:  # a revocation runs on the consumer's I/O thread: no scoring there
            self.before_commit()
        if not self.flush(timeout_s) or self.doomed():
            return  # aborted and redone by the loop (Outlet.redo_after_rejection); never committed
        offsets = _offsets(self.tracker, self.assigned)
        if not offsets:
            # what it holds is not of partitions we own (any more): committed without offsets, the group
            # generation would never be checked, and a zombie's answers would become visible
            self.abandon()
            return
        group = self.consumer.group_metadata()  # the snapshot checked here is the one the broker checks
        try:
            if group.generation_id < 0 or not group.member_id:
                # kafka-python clears the generation as soon as a heartbeat learns we were evicted, before
                # poll() reports the partitions lost, and the group coordinator takes a transactional offset
                # commit that names no generation without any check (old clients send none; shown on Apache
                # Kafka 4.1 in test_exactly_once): a zombie's stale answers would be committed that way.
                raise CommitFailedError("no group generation: this member was evicted from the group")
            self.producer.send_offsets_to_transaction(_request(offsets), group)
            self.producer.commit_transaction()
        except CommitFailedError as exc:
            # the group's generation moved on while we were stalled (paused, GC, SIGSTOP): the partitions
            # may be another member's now. Not a failure of the service: abort, rejoin, redo what we get.
            self._abort()
            self._open = False
            log.warning("transaction aborted: %s; its records are redone by their owner after the rejoin", exc)
            if not revoking:  # a revocation forgets those partitions by itself
                self.redo()
            return
        except KafkaError as exc:
            self._abort()
            raise PipelineError(
                f"transaction failed and was aborted: {exc!r}; a restart resumes from the last committed offsets"
            ) from exc
        finally:
            self._open = False
        self.tracker.mark_committed(offsets)
        # what found the zombie duplicates (client_fixes.forget_refused_txn_offsets): offsets per commit
        log.debug("transaction committed: offsets %s, group generation %d", offsets, group.generation_id)
        self.metrics.transaction_committed()

    def _abort(self) -> None:
        self.after_abort()
        try:
            self.producer.abort_transaction()
        except KafkaError as exc:
            log.warning("aborting the transaction failed: %s (the broker aborts it on timeout)", exc)

    def abandon(self) -> bool:
        if not self._open:
            return False
        self._abort()
        self._open = False
        log.warning("open transaction aborted; its answers are redone from the committed offsets")
        return True
