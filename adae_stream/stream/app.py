"""The pipeline loop (an Application in the Quix Streams sense): owns the session and the loop.

Loop: poll -> record path (decode, route, lane, batch, score, answer) -> sink -> commit. Each job has its
own home: the clients and the subscription (session.py), partition state (assignments.py), what happens
to a record (record_path.py, lanes.py), where each record ends up and the per-record error policy
(sink.py), what may be committed (commit.py), the rebalance hooks (rebalance.py). A record's offset
becomes committable only once the broker acked its answer or dead-letter record (OffsetTracker), so
delivery is at-least-once even though batches mix polls, partitions and detectors.

Only failures of the whole service stop the loop; a record costs at most itself.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from adae_stream.config import Config
from adae_stream.errors import FirstFailure, PipelineError
from adae_stream.scoring import DetectorSource, StreamScorer, as_source
from adae_stream.stream.assignments import Assignments
from adae_stream.stream.clients import read_since
from adae_stream.stream.codecs import decode_response
from adae_stream.stream.commit import AtLeastOnceCommitter, Committer, TransactionalCommitter
from adae_stream.stream.feedback import FeedbackJoin, rebuild
from adae_stream.stream.offsets import OffsetTracker
from adae_stream.stream.rebalance import RebalanceListener
from adae_stream.stream.record_path import RecordPath
from adae_stream.stream.session import KafkaSession, require_connected
from adae_stream.stream.sink import Sink
from adae_stream.stream.telemetry import Metrics, NullMetrics, Tallied

log = logging.getLogger(__name__)

IDLE_POLL_MS = 10  # the longest the loop blocks in poll() (see Pipeline._poll_timeout_ms)
FAILURE_FLUSH_S = 5.0  # after a fatal error: how long to wait for answers already sent, and for the commit


class Pipeline:
    def __init__(
        self,
        config: Config,
        detectors: StreamScorer | DetectorSource,
        metrics: Metrics | None = None,
        bootstrap_servers: str | None = None,
    ) -> None:
        """detectors: one scorer (``detector.path``: it serves every record) or a repository."""
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
        self.session = KafkaSession(config, bootstrap, self.metrics.set_kafka_up)
        self.tracker = OffsetTracker()
        self._sink: Sink | None = None
        self._committer: Committer | None = None
        join = (
            FeedbackJoin(config.feedback.window_s, config.feedback.max_instances, self.metrics)
            if self.kafka.feedback_topic
            else None
        )
        self.path = RecordPath(
            config, as_source(detectors, config.detector.model_name), self.metrics, lambda: self.sink, join
        )
        self.partitions = Assignments(
            self.tracker,
            self.path.lanes,
            self.kafka.auto_offset_reset,
            self.kafka.delivery_timeout_s,
            on_forget=lambda tp: self.metrics.set_lag(tp.topic, tp.partition, None),
        )
        self.closing = False  # set at shutdown: close() may revoke, and the drain already did that work
        self._stop = threading.Event()
        self._failure = FirstFailure()  # the one record of why the service stops with exit 1
        self._join_rebuilt = False
        self._last_housekeeping = 0.0
        self.last_loop = time.monotonic()

    # ------------------------------------------------------------------ what the loop is built on
    @property
    def consumer(self) -> KafkaConsumer:
        return self.session.consumer

    @consumer.setter
    def consumer(self, consumer: KafkaConsumer) -> None:
        self.session.consumer = consumer

    @property
    def producer(self) -> KafkaProducer:
        return self.session.producer

    @property
    def sink(self) -> Sink:
        return require_connected(self._sink, "sink")

    @property
    def committer(self) -> Committer:
        return require_connected(self._committer, "committer")

    @committer.setter
    def committer(self, committer: Committer) -> None:
        self._committer = committer

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
            if not self.session.connect(self._stop, self._on_connected):
                return 0  # stopped while connecting
            # Everything alive now (TensorFlow, Keras, the detector: ~375k objects) lives as long as the
            # process. Frozen, it is skipped by the cyclic GC, whose full collections would otherwise walk it
            # in the middle of traffic (~150 ms per full collection, measured with gc.collect()).
            gc.freeze()
            while not self._stop.is_set() and self.failure is None:
                self._turn()
        except PipelineError as exc:
            self._failure.record(str(exc))
        finally:
            gc.unfreeze()
            self._shutdown()
        if self.failure:
            log.error("pipeline stopped: %s", self.failure)
            return 1
        return 0

    def _on_connected(self) -> None:
        """What is built on fresh clients: the sink and committer, the feedback join, the subscription."""
        self._committer = self._build_committer()
        self._sink = Sink(
            self.producer,
            self.kafka,
            self.tracker,
            self.metrics,
            before_send=self.committer.before_send,
            topic_limits=self.session.topic_limits,
            failure=self._failure,
        )
        self._rebuild_join()
        self.session.subscribe(RebalanceListener(self))

    def _build_committer(self) -> Committer:
        interval_s, timeout_s = self.kafka.commit_interval_ms / 1000.0, self.kafka.delivery_timeout_s

        def assigned() -> set[TopicPartition]:  # read at each commit, never copied
            return self.partitions.assigned

        if self.cfg.delivery != "exactly_once":
            return AtLeastOnceCommitter(self.consumer, self.tracker, assigned, interval_s, timeout_s)
        return TransactionalCommitter(
            self.producer,
            self.consumer,
            self.tracker,
            assigned,
            interval_s,
            timeout_s,
            self.metrics,
            doomed=lambda: self._sink is not None and self._sink.doomed,
            redo=self._forget_assigned,
        )

    def _turn(self) -> None:
        self.last_loop = time.monotonic()
        if self.session.pattern_check_due():
            self.session.subscribe(RebalanceListener(self))
        if not self.session.subscribed:
            self._stop.wait(IDLE_POLL_MS / 1000.0)
            return
        polled = self.consumer.poll(timeout_ms=self._poll_timeout_ms())
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
        self.sink.drain()
        self.path.score(force=False)
        self.path.take_new_detectors()
        self.committer.commit()
        if self.sink.doomed:
            self._redo_after_rejection()
        self._housekeeping()

    def _poll_timeout_ms(self) -> int:
        """At most IDLE_POLL_MS even when nothing is pending. kafka-python 3's poll() sleeps
        min(timeout, retry_backoff_ms) when it finds no fetch in flight, and it can find none in the
        instant a fetch response is being handed over: with a 100 ms timeout, answers then waited
        100 ms behind data that had already arrived (the latency benchmark's p99 tail). A short
        timeout bounds that sleep; an idle loop turn costs microseconds."""
        due = self.path.lanes.time_until_due()
        return IDLE_POLL_MS if due is None else int(min(IDLE_POLL_MS, due * 1000.0))

    def _rebuild_join(self) -> None:
        """After a restart, the answers still waiting for labels are read back from the output topic (the
        changelog), from now minus feedback.window_s: no database, no state of our own on disk."""
        join = self.path.join
        if join is None or self._join_rebuilt:
            return
        t0 = time.monotonic()
        since_ms = int((time.time() - self.cfg.feedback.window_s) * 1000)
        records = read_since(
            self.cfg,
            self.session.bootstrap,
            self.kafka.output_topic,
            since_ms,
            timeout_s=max(30.0, self.kafka.connect_timeout_s),
        )
        kept = rebuild(join, records, decode_response)
        self._join_rebuilt = True
        log.info(
            "feedback join rebuilt from %s: %d answers (%d instances) of the last %.0f s, in %.1f s",
            self.kafka.output_topic,
            kept,
            join.instances,
            self.cfg.feedback.window_s,
            time.monotonic() - t0,
        )

    def _shutdown(self) -> None:
        self.closing = True
        try:
            if self.session.connected and self._committer is not None:
                if self.failure is None:
                    self.finish_in_flight()
                if self._sink is not None and self._sink.doomed:
                    self.committer.abandon()  # redone by whoever reads these partitions next
                elif self.failure is None:
                    self.committer.commit(force=True)
                else:
                    self._wind_down_after_failure()
        except Exception as exc:  # closing must go on; nothing more is committed past unpublished work anyway
            log.error("error while draining at shutdown: %s", exc)
            self._failure.record(f"drain failed: {exc}")
        finally:
            self.session.close()
            log.info(
                "pipeline closed: %d answered, %d dead-lettered, %d batches",
                self.stats["ok"],
                self.stats["dead_letter"],
                self.stats["batches"],
            )

    def _wind_down_after_failure(self) -> None:
        """After a fatal error nothing new is published. Answers already sent get a short while to be acked,
        and only what is acked is committed: the failed record is not, so no later offset of its partition
        is either. An open transaction is aborted."""
        if self.committer.abandon():
            return
        try:
            self.producer.flush(timeout=FAILURE_FLUSH_S)
        except KafkaError as exc:
            log.warning("answers still unacked at stop (they are redone after a restart): %s", exc)
        self.committer.commit(force=True, timeout_s=FAILURE_FLUSH_S)

    # ------------------------------------------------------------------ rebalance (see rebalance.py)
    def finish_in_flight(self) -> None:
        """Score what is pending and wait until every answer and dead letter is acked (or failed)."""
        self.path.score(force=True)
        self.sink.flush(self.kafka.delivery_timeout_s)

    def assigned(self, partitions: set[TopicPartition]) -> None:
        """Positioned on the loop's next turn (Assignments.position)."""
        self.partitions.incoming.put(partitions)

    def forget(self, partitions: set[TopicPartition]) -> None:
        self.partitions.forget(partitions)

    def lose(self, lost: set[TopicPartition]) -> None:
        """Partitions lost without revocation: drop their pending work and abort an open transaction. The
        aborted transaction also held answers of the partitions we keep, so those are redone too."""
        self.partitions.forget(lost)
        if self._committer is not None and self._committer.abandon():
            self._redo_assigned()

    def _redo_after_rejection(self) -> None:
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
        self.sink.redone(self.producer, self.committer.before_send)
        self._redo_assigned()

    def _forget_assigned(self) -> None:
        """The group moved on without us (a zombie's refused commit): nothing is ours until the rejoin
        assigns it again; the assignment then positions it from the committed offsets."""
        self.partitions.forget(set(self.partitions.assigned))

    def _redo_assigned(self) -> None:
        kept = set(self.partitions.assigned)
        self.partitions.forget(kept)
        self.partitions.incoming.put(kept)

    # ------------------------------------------------------------------ housekeeping
    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_housekeeping < 1.0:
            return
        self._last_housekeeping = now
        # kafka-python 3 raises (and keeps) a KafkaTimeoutError for each wait in poll() that times out, a
        # cycle of traceback, frames and closures that outlives the young collections. At 1,830
        # requests/s, ~200,000 such objects piled up every ~3 s and were freed in one full collection
        # of 60-70 ms that stalled every thread. Collected every second here, each pass took < 5 ms.
        gc.collect()
        for tp in self.partitions.positioned:
            hw = self.consumer.highwater(tp)
            point = self.tracker.commit_point(tp)
            if point is None:
                try:
                    point = self.consumer.position(tp, timeout_ms=100)
                except KafkaError:
                    continue
            if hw is not None and point is not None:
                self.metrics.set_lag(tp.topic, tp.partition, max(0, hw - point))
        self.metrics.set_kafka_up(self.session.broker_connected())
