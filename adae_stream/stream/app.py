"""The pipeline loop (an Application in the Quix Streams sense): owns the session and the loop.

Loop (``turn``, one step): poll -> record path (decode, route, lane, batch, score, answer) or label path
(a label into the join, its evidence to the ledger) -> sink -> commit. Each job has its own home: the
clients and the subscription (session.py), partition state (assignments.py), what happens to a request
(record_path.py, lanes.py) and to a label (label_path.py; the join and its tail in feedback/), where each
record ends up and the per-record error policy (sink.py), what may be committed (commit.py), the sink and
committer on the current producer and their recovery (outlet.py), the rebalance hooks (rebalance.py), the
once-a-second chores (housekeeping.py). A record's offset becomes committable only once the broker acked
its answer or dead-letter record (OffsetTracker), so delivery is at-least-once even though batches mix
polls, partitions and detectors; what the join decided takes effect with the commit that covers it.

Only failures of the whole service stop the loop; a record costs at most itself.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

from adae_stream.clients import Clients, Consumer, TopicPartition
from adae_stream.clients.build import KafkaClients
from adae_stream.config import Config
from adae_stream.errors import FirstFailure, PipelineError
from adae_stream.feedback.join import FeedbackJoin
from adae_stream.feedback.join_tail import JoinTail
from adae_stream.scoring import DetectorSource, StreamScorer, as_source
from adae_stream.stream.assignments import Assignments
from adae_stream.stream.commit import Committer
from adae_stream.stream.housekeeping import Housekeeping
from adae_stream.stream.label_path import LabelPath
from adae_stream.stream.offsets import OffsetTracker
from adae_stream.stream.outlet import Outlet
from adae_stream.stream.rebalance import RebalanceListener
from adae_stream.stream.record_path import RecordPath
from adae_stream.stream.session import KafkaSession
from adae_stream.stream.sink import Sink
from adae_stream.stream.telemetry import Metrics, NullMetrics, Tallied

log = logging.getLogger(__name__)

IDLE_POLL_MS = 10  # the longest the loop blocks in poll() (see Pipeline._poll_timeout_ms)


class Pipeline:
    def __init__(
        self,
        config: Config,
        detectors: StreamScorer | DetectorSource,
        metrics: Metrics | None = None,
        bootstrap_servers: str | None = None,
        clients: Clients | None = None,
    ) -> None:
        """detectors: one scorer (``detector.path``: it serves every record) or a repository. clients: where
        the Kafka clients come from (kafka-python's, from the config, unless given)."""
        self.cfg = config
        self.kafka = config.kafka
        # every count the pipeline keeps of itself goes through here (stats reads them back)
        self.stats = Tallied(metrics if metrics is not None else NullMetrics())
        self.metrics: Metrics = self.stats
        bootstrap = bootstrap_servers or self.kafka.bootstrap_servers
        if bootstrap == "embedded":
            raise ValueError(
                "resolve 'embedded' to a broker address before building the Pipeline (see adae_stream.runner)"
            )
        clients = clients or KafkaClients(config, bootstrap)
        self.session = KafkaSession(config, bootstrap, clients, self.metrics.set_kafka_up)
        self.tracker = OffsetTracker()
        feedback = config.feedback
        join = (
            FeedbackJoin(feedback.window_s, feedback.max_instances, self.metrics, max_pending=feedback.max_pending)
            if self.kafka.feedback_topic
            else None
        )
        # the group's answers, read into this replica's join (none without a feedback topic)
        self.tail = JoinTail(config, clients, join) if join is not None else None
        self.labels = LabelPath(self.kafka, join, lambda: self.sink) if join is not None else None
        if join is not None:  # the join's label decisions take effect with the commit that covers them
            self.tracker.on_committed(join.journal.commit)
        self.path = RecordPath(
            config, as_source(detectors, config.detector.model_name), self.metrics, lambda: self.sink, self.labels
        )
        self.partitions = Assignments(
            self.tracker,
            self.path.lanes,
            self.kafka.auto_offset_reset,
            self.kafka.delivery_timeout_s,
            on_forget=self._forget_partition,
        )
        self._stop = threading.Event()
        self._failure = FirstFailure()  # the one record of why the service stops with exit 1
        self.outlet = Outlet(
            config,
            self.session,
            self.partitions,
            self.metrics,
            self._failure,
            before_commit=lambda score: self.path.before_commit(score),
            after_abort=lambda: self.path.summaries.clear(),
        )
        self.housekeeping = Housekeeping(self.session, self.partitions, self.metrics)
        self.closing = False  # set at shutdown: close() may revoke, and the drain already did that work
        self.last_loop = time.monotonic()

    def _forget_partition(self, tp: TopicPartition) -> None:
        """What lives outside Assignments for a partition no longer ours: its lag series, its held labels."""
        self.metrics.set_lag(tp.topic, tp.partition, None)
        if self.labels is not None:
            self.labels.forget_partition(tp.topic, tp.partition)

    # ------------------------------------------------------------------ what the loop is built on
    @property
    def consumer(self) -> Consumer:
        return self.session.consumer

    @property
    def sink(self) -> Sink:
        return self.outlet.sink

    @property
    def committer(self) -> Committer:
        return self.outlet.committer

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the loop to finish: it drains, commits and closes (safe from signal handlers and threads)."""
        self._stop.set()

    @property
    def failure(self) -> str | None:
        """Why the service stopped (or is stopping) with exit 1; None while healthy."""
        return self._failure.message

    @property
    def ready(self) -> bool:
        """Detector loaded (it is, once constructed), partitions assigned, no fatal error."""
        return self.session.connected and bool(self.partitions.assigned) and self.failure is None

    def alive(self, stall_s: float = 60.0) -> bool:
        return time.monotonic() - self.last_loop < stall_s

    def run(self) -> int:
        """Run until stop() or a fatal error. Returns the exit code (0 clean, 1 fatal)."""
        try:
            if not self.connect():
                return 0  # stopped while connecting
            # Everything alive now (TensorFlow, Keras, the detector: ~375k objects) lives as long as the
            # process. Frozen, it is skipped by the cyclic GC, whose full collections would otherwise walk it
            # in the middle of traffic (~150 ms per full collection, measured with gc.collect()).
            gc.freeze()
            while not self._stop.is_set() and self.failure is None:
                self.turn()
        except PipelineError as exc:
            self._failure.record(str(exc))
        finally:
            gc.unfreeze()
            self._shutdown()
        if self.failure:
            log.error("pipeline stopped: %s", self.failure)
            return 1
        return 0

    def connect(self) -> bool:
        """Clients built (with backoff) and what stands on them; False if stopped meanwhile."""
        return self.session.connect(self._stop, self._on_connected)

    def _on_connected(self) -> None:
        """What is built on fresh clients: the sink and committer, the feedback join, the subscription."""
        self.outlet.build()
        if self.tail is not None and not self.tail.started:
            self.tail.start()  # from now minus feedback.window_s: every replica's answers still labellable
        self.session.subscribe(RebalanceListener(self))

    def turn(self) -> None:
        """One step of the loop (the fast tests drive it on stand-in clients, tests/stand_ins.py)."""
        self.last_loop = time.monotonic()
        if self.session.pattern_check_due():
            self.session.subscribe(RebalanceListener(self))
        if not self.session.subscribed:
            self._stop.wait(IDLE_POLL_MS / 1000.0)
            return
        polled = self.consumer.poll(timeout_ms=self._poll_timeout_ms(), max_records=self.kafka.max_poll_records)
        read = sum(len(records) for records in polled.values())
        skip = self.partitions.position(self.consumer)
        owned = self.partitions.assigned
        for tp, records in polled.items():
            if tp in skip or tp not in owned:
                # fetched before the seek: they come again from the committed offset; or fetched for a
                # partition revoked or lost inside this very poll(): its new owner answers them (a
                # zombie answering them would commit them without the offsets that fence it)
                continue
            for rec in records:
                self.tracker.add(tp, rec.offset)
                self.path.ingest(rec)
        if self.tail is not None and self.labels is not None:  # both exist with a feedback topic, or neither
            self.tail.poll()
            self.labels.settle(self.tail.placed)
        self.sink.drain()
        # a poll that came back short left nothing buffered: score what is pending now (natural batching;
        # under load, the next batch is what arrived while this one was scored)
        drained = read < self.kafka.max_poll_records
        self.path.score(force=drained and self.cfg.batching.dispatch_when_idle)
        self.path.take_new_detectors()
        # caught up (the poll came back short, everything read is scored): an exactly_once commit now costs
        # no one a wait; what arrives during it is the next transaction's (group commit)
        self.committer.commit(quiet=drained and self.path.lanes.pending == 0)
        if self.sink.doomed:
            self.outlet.redo_after_rejection()
        self.housekeeping.run_if_due()

    def _poll_timeout_ms(self) -> int:
        """At most IDLE_POLL_MS even when nothing is pending. kafka-python 3's poll() sleeps
        min(timeout, retry_backoff_ms) when it finds no fetch in flight, and it can find none in the
        instant a fetch response is being handed over: with a 100 ms timeout, answers then waited
        100 ms behind data that had already arrived (the latency benchmark's p99 tail). A short
        timeout bounds that sleep; an idle loop turn costs microseconds. No wait at all while answers
        wait for a commit to become visible and nothing waits for its batch: the poll that comes back
        short is the signal to commit."""
        if self.committer.holds_unpublished and self.path.lanes.pending == 0:
            return 0
        due = self.path.lanes.time_until_due()
        return IDLE_POLL_MS if due is None else int(min(IDLE_POLL_MS, due * 1000.0))

    def _shutdown(self) -> None:
        self.closing = True
        try:
            if self.session.connected and self.outlet.built:
                if self.failure is None:
                    self.finish_in_flight()
                if self.outlet.doomed:
                    self.committer.abandon()  # redone by whoever reads these partitions next
                elif self.failure is None:
                    self.committer.commit(force=True)
                else:
                    self.outlet.wind_down_after_failure()
        except Exception as exc:  # closing must go on; nothing more is committed past unpublished work anyway
            log.error("error while draining at shutdown: %s", exc)
            self._failure.record(f"drain failed: {exc}")
        finally:
            self.session.close()
            if self.tail is not None:
                self.tail.close()
            log.info(
                "pipeline closed: %d answered, %d dead-lettered, %d batches",
                self.stats["ok"],
                self.stats["dead_letter"],
                self.stats["batches"],
            )

    # ------------------------------------------------------------------ rebalance (see rebalance.py)
    def finish_in_flight(self) -> None:
        """Score what is pending, send the summaries, and wait until everything sent is acked (or failed)."""
        self.path.before_commit()
        self.sink.flush(self.kafka.delivery_timeout_s)

    def assigned(self, partitions: set[TopicPartition]) -> None:
        """Positioned on the loop's next turn (Assignments.position)."""
        self.partitions.incoming.put(partitions)

    def forget(self, partitions: set[TopicPartition]) -> None:
        self.partitions.forget(partitions)

    def lose(self, lost: set[TopicPartition]) -> None:
        self.outlet.lose(lost)
