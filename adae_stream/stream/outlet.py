"""The producer side of the loop: the sink and the committer built on the session's producer, and how they
recover when the broker rejects a record or partitions are lost.

Both are built anew whenever the producer is: at connect, and after a rejection left kafka-python's
producer unusable. Partition state itself (what to forget, what to redo) stays with Assignments; this
object decides *when* it must be redone, because only the producer side knows what an abort discarded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping

from adae_stream.clients import KafkaError, TopicPartition
from adae_stream.config import Config
from adae_stream.errors import FirstFailure
from adae_stream.stream.assignments import Assignments
from adae_stream.stream.commit import AtLeastOnceCommitter, Committer, TransactionalCommitter
from adae_stream.stream.session import KafkaSession, require_connected
from adae_stream.stream.sink import Sink
from adae_stream.stream.telemetry import Metrics

log = logging.getLogger(__name__)

FAILURE_FLUSH_S = 5.0  # after a fatal error: how long to wait for answers already sent, and for the commit


class Outlet:
    def __init__(
        self,
        cfg: Config,
        session: KafkaSession,
        partitions: Assignments,
        metrics: Metrics,
        failure: FirstFailure,
        before_commit: Callable[[bool], None],
        after_abort: Callable[[], None],
    ) -> None:
        """before_commit(score): what the loop's commits send first (RecordPath.before_commit; score: every
        request read first, for a transaction); after_abort: what forgets the work of an aborted transaction
        that is not on the broker (its batch summaries)."""
        self.cfg = cfg
        self.before_commit, self.after_abort = before_commit, after_abort
        self.kafka = cfg.kafka
        self.session = session
        self.partitions = partitions
        self.metrics = metrics
        self.failure = failure
        self._sink: Sink | None = None
        self._committer: Committer | None = None
        partitions.tracker.on_committed(self._committed)

    def _committed(self, offsets: Mapping[Hashable, int]) -> None:
        if self._sink is not None:
            self._sink.committed(offsets)

    @property
    def sink(self) -> Sink:
        return require_connected(self._sink, "sink")

    @property
    def committer(self) -> Committer:
        return require_connected(self._committer, "committer")

    @property
    def built(self) -> bool:
        return self._committer is not None

    @property
    def doomed(self) -> bool:
        return self._sink is not None and self._sink.doomed

    def build(self) -> None:
        """Sink and committer on the session's (new) clients."""
        self._committer = self._build_committer()
        self._sink = Sink(
            self.session.producer,
            self.kafka,
            self.partitions.tracker,
            self.metrics,
            before_send=self._committer.before_send,
            topic_limits=self.session.topic_limits,
            failure=self.failure,
        )

    def _build_committer(self) -> Committer:
        interval_s, timeout_s = self.kafka.commit_interval_ms / 1000.0, self.kafka.delivery_timeout_s
        tracker, consumer = self.partitions.tracker, self.session.consumer

        def assigned() -> set[TopicPartition]:  # read at each commit, never copied
            return self.partitions.assigned

        if self.cfg.delivery != "exactly_once":
            return AtLeastOnceCommitter(
                consumer, tracker, assigned, interval_s, timeout_s, lambda: self.before_commit(False)
            )
        return TransactionalCommitter(
            self.session.producer,
            consumer,
            tracker,
            assigned,
            interval_s,
            timeout_s,
            self.metrics,
            flush=lambda timeout_s: self.sink.flush(timeout_s),
            doomed=lambda: self.doomed,
            redo=self.partitions.forget_all,
            before_commit=lambda: self.before_commit(True),
            after_abort=self.after_abort,
            when_idle=self.kafka.commit_when_idle,
        )

    def lose(self, lost: set[TopicPartition]) -> None:
        """Partitions lost without revocation: drop their pending work and abort an open transaction. The
        aborted transaction also held answers of the partitions we keep, so those are redone too."""
        self.partitions.forget(lost)
        if self._committer is not None and self._committer.abandon():
            self.partitions.redo()

    def redo_after_rejection(self) -> None:
        """A record rejected by the broker (Sink.doomed). The producer is replaced in both modes:
        kafka-python 3.0.12 leaves an idempotent producer fatal, and a transactional one bumping its epoch
        into OutOfOrderSequenceNumber (measured on Apache Kafka 4.1). exactly_once: the open transaction
        is aborted (the new producer's InitProducerId, same transactional id, aborts it if the old one
        could not). at_least_once: what was acked is committed first. Either way the rest is redone from
        the committed offsets, and the rejected record's dead letter takes its answer's place (Sink keeps
        it by coordinates): it cannot loop."""
        self.sink.flush(self.kafka.delivery_timeout_s)  # every record in flight settled (most failed)
        if self.cfg.delivery == "exactly_once":
            self.committer.abandon()
        else:
            self.committer.commit(force=True)
        self.session.replace_producer()
        self._committer = self._build_committer()
        self.sink.redone(self.session.producer, self.committer.before_send)
        self.partitions.redo()

    def wind_down_after_failure(self) -> None:
        """After a fatal error nothing new is published. Answers already sent get a short while to be acked,
        and only what is acked is committed: the failed record is not, so no later offset of its partition
        is either. An open transaction is aborted."""
        if self.committer.abandon():
            return
        try:
            self.session.producer.flush(timeout=FAILURE_FLUSH_S)
        except KafkaError as exc:
            log.warning("answers still unacked at stop (they are redone after a restart): %s", exc)
        self.committer.commit(force=True, timeout_s=FAILURE_FLUSH_S)
