"""The pipeline loop (an Application in the Quix Streams sense): owns the consumer and the loop.

Loop: poll -> decode -> micro-batch -> score (one compiled call) -> split -> answer. Each job has its own
module: the clients and topics (clients.py), where each record ends up and the per-record error policy
(sink.py), what may be committed (commit.py), the rebalance hooks (rebalance.py). A record's offset
becomes committable only once the broker acked its answer or dead-letter record (OffsetTracker), so
delivery is at-least-once even though batches mix polls and partitions.

Every step for one record sits inside an error boundary: whatever one record does, it costs that record
(dead-lettered with a reason), never the service. Only failures of the whole service stop the loop.
"""

from __future__ import annotations

import gc
import logging
import queue
import re
import threading
import time
import zlib
from typing import Any, Protocol, TypeVar

import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaConfigurationError, KafkaError
from kafka.structs import TopicPartition

from adae_stream.config import Config, input_topics
from adae_stream.errors import DecodeError, NotARequest, PipelineError
from adae_stream.scoring import (
    CORRECTED,
    INSTANCE_SCORE,
    IS_ADVERSARIAL,
    NO_DEFENSE,
    DetectorSource,
    StreamScorer,
    answer_fields,
    as_source,
)
from adae_stream.stream.batcher import Batch
from adae_stream.stream.client_fixes import keep_pending_join_visible
from adae_stream.stream.clients import build_consumer, build_producer, ensure_topics, read_since
from adae_stream.stream.codecs import (
    INSTANCE_INDEX,
    RESULT_DTYPES,
    RawRecord,
    Request,
    decode,
    decode_response,
    encode_flagged,
)
from adae_stream.stream.codecs.tensors import conform
from adae_stream.stream.commit import AtLeastOnceCommitter, Committer, TransactionalCommitter
from adae_stream.stream.feedback import PREDICTIONS, FeedbackJoin, Outcome, parse_feedback, rebuild
from adae_stream.stream.lanes import Lane, Lanes
from adae_stream.stream.offsets import OffsetTracker
from adae_stream.stream.rebalance import RebalanceListener
from adae_stream.stream.routing import Router, parse_routes
from adae_stream.stream.sink import Sink, Tally

log = logging.getLogger(__name__)
T = TypeVar("T")

IDLE_POLL_MS = 10  # the longest the loop blocks in poll() (see Pipeline._poll_timeout_ms)
TOPIC_CHECK_S = 10.0  # how often kafka.input_pattern is matched against the cluster's topics again
FAILURE_FLUSH_S = 5.0  # after a fatal error: how long to wait for answers already sent, and for the commit


class Metrics(Protocol):
    """What the pipeline reports; adae_stream.monitoring.metrics.PipelineMetrics implements it."""

    def observe_batch(self, n: int, seconds: float) -> None: ...
    def observe_results(
        self, scores: np.ndarray, flags: np.ndarray, corrected: np.ndarray, no_defense: np.ndarray
    ) -> None: ...
    def request_done(self, status: str, reason: str | None = None, end_to_end_s: float | None = None) -> None: ...
    def set_lag(self, topic: str, partition: int, lag: int | None) -> None: ...
    def set_kafka_up(self, up: bool) -> None: ...
    def feedback_outcome(self, outcome: Outcome) -> None: ...
    def set_feedback_state(self, answers: int, instances: int) -> None: ...
    def flagged_capture(self, result: str) -> None: ...
    def observe_detector(
        self, detector: str, version: int, role: str, scores: np.ndarray, flags: np.ndarray
    ) -> None: ...
    def shadow_agreement(self, detector: str, serving: np.ndarray, shadow: np.ndarray) -> None: ...
    def set_detectors(self, detectors: dict[str, Any]) -> None: ...


class NullMetrics:
    """No-op metrics, so the loop never branches on whether metrics are enabled."""

    def observe_batch(self, n, seconds):
        pass

    def observe_results(self, scores, flags, corrected, no_defense):
        pass

    def request_done(self, status, reason=None, end_to_end_s=None):
        pass

    def set_lag(self, topic, partition, lag):
        pass

    def set_kafka_up(self, up):
        pass

    def feedback_outcome(self, outcome):
        pass

    def set_feedback_state(self, answers, instances):
        pass

    def flagged_capture(self, result):
        pass

    def observe_detector(self, detector, version, role, scores, flags):
        pass

    def shadow_agreement(self, detector, serving, shadow):
        pass

    def set_detectors(self, detectors):
        pass


def _connected(client: T | None, name: str) -> T:
    if client is None:
        raise PipelineError(f"the pipeline's {name} is used while it is not connected to Kafka (a bug)")
    return client


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
        self.detectors = as_source(detectors, config.detector.model_name)
        self.router = Router(parse_routes(config.detector.routes), getattr(self.detectors, "default", None))
        self.metrics: Metrics = metrics if metrics is not None else NullMetrics()
        self.bootstrap = bootstrap_servers or self.kafka.bootstrap_servers
        if self.bootstrap == "embedded":
            raise ValueError(
                "resolve 'embedded' to a broker address before building the Pipeline (see adae_stream.runner)"
            )
        self.lanes = Lanes(config.batching, self.detectors.current())
        self.metrics.set_detectors(dict(self.detectors.current()))
        self.tracker = OffsetTracker()
        self.stats = Tally()  # ok, dead_letter, batches, instances, transactions
        # The clients and what is built on them exist from a successful connect until shutdown; the loop
        # reaches them through the properties below, which fail loudly if used outside that span.
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._sink: Sink | None = None
        self._committer: Committer | None = None
        self.assignments: queue.SimpleQueue[set[TopicPartition]] = queue.SimpleQueue()  # from the rebalance listener
        self.closing = False  # set at shutdown: close() may revoke, and the drain already did that work
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._assigned: set[TopicPartition] = set()
        self._unpositioned: set[TopicPartition] = set()  # assigned, not yet sought to the committed offset
        self._subscribed: set[str] = set()
        self._last_topic_check = 0.0
        self._last_housekeeping = 0.0
        self.last_loop = time.monotonic()
        self._fields = answer_fields(config.detector.return_instance_score, config.detector.return_all_predictions)
        self.join = (
            FeedbackJoin(config.feedback.window_s, config.feedback.max_instances, self.metrics)
            if self.kafka.feedback_topic
            else None
        )
        self._join_rebuilt = False

    # ------------------------------------------------------------------ the connected clients
    @property
    def consumer(self) -> KafkaConsumer:
        return _connected(self._consumer, "consumer")

    @consumer.setter
    def consumer(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer

    @property
    def producer(self) -> KafkaProducer:
        return _connected(self._producer, "producer")

    @property
    def sink(self) -> Sink:
        return _connected(self._sink, "sink")

    @property
    def committer(self) -> Committer:
        return _connected(self._committer, "committer")

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
        return self._fatal or (self._sink.failure if self._sink is not None else None)

    @property
    def ready(self) -> bool:
        """Detector loaded (it is, once constructed), partitions assigned, no fatal error."""
        return self._consumer is not None and bool(self._assigned) and self.failure is None

    def alive(self, stall_s: float = 60.0) -> bool:
        return time.monotonic() - self.last_loop < stall_s

    def run(self) -> int:
        """Run until stop() or a fatal error. Returns the exit code (0 clean, 1 fatal)."""
        try:
            if not self._connect():
                return 0  # stopped while connecting
            # Everything alive now (TensorFlow, Keras, the detector: ~375k objects) lives as long as the
            # process. Frozen, it is skipped by the cyclic GC, whose full collections would otherwise walk it
            # in the middle of traffic (~150 ms per full collection, measured with gc.collect()).
            gc.freeze()
            while not self._stop.is_set():
                self._turn()
        except PipelineError as exc:
            self._fatal = str(exc)
        finally:
            gc.unfreeze()
            self._shutdown()
        if self.failure:
            log.error("pipeline stopped: %s", self.failure)
            return 1
        return 0

    def _subscribe(self) -> None:
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
                    "could not list topics for kafka.input_pattern: %s; keeping %s", exc, sorted(self._subscribed)
                )
                return
        else:
            topics = set(input_topics(self.kafka))
        if topics and self.kafka.feedback_topic:
            topics.add(self.kafka.feedback_topic)
        if topics == self._subscribed:
            return
        if not topics:
            log.warning(
                "no topic matches kafka.input_pattern %r yet; checking every %.0f s",
                self.kafka.input_pattern,
                TOPIC_CHECK_S,
            )
            return
        log.info("subscribing to %s", ", ".join(sorted(topics)))
        self.consumer.subscribe(sorted(topics), listener=RebalanceListener(self))
        self._subscribed = topics

    def _turn(self) -> None:
        self.last_loop = time.monotonic()
        if self.kafka.input_pattern and time.monotonic() - self._last_topic_check > TOPIC_CHECK_S:
            self._subscribe()
        if not self._subscribed:
            self._stop.wait(IDLE_POLL_MS / 1000.0)
            return
        polled = self.consumer.poll(timeout_ms=self._poll_timeout_ms())
        skip = self._position_assigned()
        for tp, records in polled.items():
            if tp in skip:
                continue  # fetched before the seek: they come again from the committed offset
            for rec in records:
                self._ingest(tp, rec)
        self.sink.drain()
        self._score(force=False)
        self._take_new_detectors()
        self.committer.commit()
        self._housekeeping()
        if self.sink.failure:
            raise PipelineError(self.sink.failure)

    def _connect(self) -> bool:
        """Build the clients, retrying with exponential backoff until kafka.connect_timeout_s."""
        deadline = time.monotonic() + self.kafka.connect_timeout_s
        delay = 0.5
        while not self._stop.is_set():
            # each attempt may wait for the broker at most 3 s, so retries (and their log lines) keep coming
            attempt_ms = int(1000 * max(0.5, min(3.0, deadline - time.monotonic())))
            try:
                if self.kafka.create_topics:
                    ensure_topics(self.cfg, self.bootstrap, attempt_ms)
                self._producer = build_producer(self.cfg, self.bootstrap, attempt_ms)
                self._consumer = build_consumer(self.cfg, self.bootstrap, attempt_ms)
                keep_pending_join_visible(self.consumer)
                self._build_sink_and_committer()
                self._rebuild_join()
                self._subscribe()
                self.metrics.set_kafka_up(True)
                log.info(
                    "connected to Kafka at %s; consuming %s as group %s; publishing %s",
                    self.bootstrap,
                    self.kafka.input_pattern or ", ".join(input_topics(self.kafka)),
                    self.kafka.group_id,
                    self.kafka.publish,
                )
                return True
            except KafkaConfigurationError as exc:
                self._close_clients()
                raise PipelineError(f"invalid Kafka client settings: {exc}") from exc
            except (KafkaError, OSError) as exc:
                self.metrics.set_kafka_up(False)
                self._close_clients()
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
                self._stop.wait(min(delay, left))
                delay = min(delay * 2, 10.0)
        return False

    def _rebuild_join(self) -> None:
        """After a restart, the answers still waiting for labels are read back from the output topic (the
        changelog), from now minus feedback.window_s: no database, no state of our own on disk."""
        if self.join is None or self._join_rebuilt:
            return
        t0 = time.monotonic()
        since_ms = int((time.time() - self.cfg.feedback.window_s) * 1000)
        records = read_since(
            self.cfg,
            self.bootstrap,
            self.kafka.output_topic,
            since_ms,
            timeout_s=max(30.0, self.kafka.connect_timeout_s),
        )
        kept = rebuild(self.join, records, decode_response)
        self._join_rebuilt = True
        log.info(
            "feedback join rebuilt from %s: %d answers (%d instances) of the last %.0f s, in %.1f s",
            self.kafka.output_topic,
            kept,
            self.join.instances,
            self.cfg.feedback.window_s,
            time.monotonic() - t0,
        )

    def _build_sink_and_committer(self) -> None:
        interval_s, timeout_s = self.kafka.commit_interval_ms / 1000.0, self.kafka.delivery_timeout_s
        if self.cfg.delivery == "exactly_once":
            self._committer = TransactionalCommitter(
                self.producer, self.consumer, self.tracker, lambda: self._assigned, interval_s, timeout_s, self.stats
            )
        else:
            self._committer = AtLeastOnceCommitter(
                self.consumer, self.tracker, lambda: self._assigned, interval_s, timeout_s
            )
        self._sink = Sink(
            self.producer, self.kafka, self.tracker, self.metrics, self.stats, before_send=self.committer.before_send
        )

    def _shutdown(self) -> None:
        self.closing = True
        try:
            if self._consumer is not None and self._producer is not None:
                if self.failure is None:
                    self._drain()
                else:
                    self._wind_down_after_failure()
        except Exception as exc:  # closing must go on; nothing more is committed past unpublished work anyway
            log.error("error while draining at shutdown: %s", exc)
            self._fatal = self._fatal or f"drain failed: {exc}"
        finally:
            self._close_clients()
            log.info(
                "pipeline closed: %d answered, %d dead-lettered, %d batches",
                self.stats["ok"],
                self.stats["dead_letter"],
                self.stats["batches"],
            )

    def _drain(self) -> None:
        """Score everything pending, wait for every answer's ack, commit: used at stop."""
        self.finish_in_flight()
        if self.failure is None:
            self.committer.commit(force=True)
        else:
            self._wind_down_after_failure()

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

    def _close_clients(self) -> None:
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

    # ------------------------------------------------------------------ rebalance (see rebalance.py)
    def finish_in_flight(self) -> None:
        """Score what is pending and wait until every answer and dead letter is acked (or failed)."""
        self._score(force=True)
        self.sink.flush(self.kafka.delivery_timeout_s)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop everything held for these partitions: their new owner (or our own re-seek) redoes it."""
        self.tracker.remove(partitions)
        for lane in self.lanes:
            for req in lane.batcher.discard_partitions(partitions):
                lane.assembler.discard(req)
            lane.assembler.discard_partitions(partitions)
            lane.shadow_parts.discard_partitions(partitions)
        self._assigned -= partitions
        self._unpositioned -= partitions
        for tp in partitions:
            self.metrics.set_lag(tp.topic, tp.partition, None)

    def lose(self, lost: set[TopicPartition]) -> None:
        """Partitions lost without revocation: drop their pending work and abort an open transaction. The
        aborted transaction also held answers of the partitions we keep, so those are redone too."""
        self.forget(lost)
        if self._committer is not None and self._committer.abandon():
            kept = set(self._assigned)
            self.forget(kept)
            self.assignments.put(kept)

    def _position_assigned(self) -> set[TopicPartition]:
        """Seek newly assigned partitions to their committed offset (or the reset policy when none).

        Returns the partitions whose records in this poll must be skipped: the ones sought now (their
        records come again from the new position) and the ones not yet sought. A partition whose
        committed offset could not be read stays paused and unsought, and is tried again next turn, so
        a failed read can never skip records.

        kafka-python keeps its in-memory fetch position for partitions that stay assigned across a
        rebalance; if the broker's log was truncated or re-created meanwhile, that position would skip
        records. Seeking to the committed offset is the at-least-once contract, whatever happened.
        """
        while True:
            try:
                assigned = self.assignments.get_nowait()
            except queue.Empty:
                break
            self.tracker.remove(assigned)
            self._assigned |= assigned
            self._unpositioned |= assigned
            log.info("partitions assigned: %s", sorted(f"{tp.topic}-{tp.partition}" for tp in assigned))
        skip = set(self._unpositioned)
        for tp in sorted(self._unpositioned):
            try:
                committed = self.consumer.committed(tp, timeout_ms=int(self.kafka.delivery_timeout_s * 1000))
            except KafkaError as exc:
                log.warning(
                    "could not read the committed offset of %s-%d (%s); partition paused, retrying",
                    tp.topic,
                    tp.partition,
                    exc,
                )
                self.consumer.pause(tp)
                continue
            if committed is not None:
                self.consumer.seek(tp, committed)
            elif self.kafka.auto_offset_reset == "earliest":
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek_to_end(tp)
            self.consumer.resume(tp)
            self._unpositioned.discard(tp)
        return skip

    # ------------------------------------------------------------------ per record
    def _poll_timeout_ms(self) -> int:
        """At most IDLE_POLL_MS even when nothing is pending. kafka-python 3's poll() sleeps
        min(timeout, retry_backoff_ms) when it finds no fetch in flight, and it can find none in the
        instant a fetch response is being handed over: with a 100 ms timeout, answers then waited
        100 ms behind data that had already arrived (the latency benchmark's p99 tail). A short
        timeout bounds that sleep; an idle loop turn costs microseconds."""
        due = self.lanes.time_until_due()
        return IDLE_POLL_MS if due is None else int(min(IDLE_POLL_MS, due * 1000.0))

    def _ingest(self, tp: TopicPartition, rec: Any) -> None:
        self.tracker.add(tp, rec.offset)
        raw = RawRecord(rec.topic, rec.partition, rec.offset, rec.key, rec.value, rec.headers or [], rec.timestamp)
        if self.join is not None and rec.topic == self.kafka.feedback_topic:
            self._feedback(self.join, raw)
            return
        try:
            # decoded before its detector is known (the model may be named in the body), then checked
            # against that detector's input
            req = decode(raw, None, self.kafka.max_message_bytes)
            lane = self.lanes.get(self.router.detector_for(req, self.lanes.names))
            if lane is None:  # another model's traffic: not bad input, nothing of ours to say
                self.sink.skip(raw, "skipped", "unrouted")
                return
            req.instances = conform(req.instances, lane.input_shape)
        except DecodeError as exc:
            self.sink.dead_letter(raw, exc.reason, exc.message)
            return
        except NotARequest as exc:
            self.sink.skip(raw, "skipped", exc.kind)
            return
        except Exception as exc:  # a decoder bug costs this record, not the service
            log.exception("decoding %s-%d@%d raised unexpectedly", rec.topic, rec.partition, rec.offset)
            self.sink.dead_letter(raw, "internal", f"decoding raised {type(exc).__name__}: {exc}"[:500])
            return
        if req.n == 0:  # nothing to score: answered at once, with empty outputs
            self._publish(lane, req, {k: np.empty(0, RESULT_DTYPES[k]) for k in self._fields})
            return
        req.arrival = time.monotonic()
        lane.batcher.add(req)

    def _score(self, force: bool) -> None:
        for lane in self.lanes:
            self._score_lane(lane, force)

    def _score_lane(self, lane: Lane, force: bool) -> None:
        """Every batch a lane has due, on the version that serves it now; the shadow after the answers."""
        detector = lane.detector
        while (batch := lane.batcher.take(force=force)) is not None:
            t0 = time.perf_counter()
            try:
                result = detector.scorer(batch.x)
            except Exception as exc:  # a failing batch costs its requests, not the process
                self._scoring_failed(lane, batch, exc)
                continue
            elapsed = time.perf_counter() - t0
            self.stats.add("batches")
            self.stats.add("instances", batch.size)
            self.metrics.observe_batch(batch.size, elapsed)
            self.metrics.observe_results(
                result[INSTANCE_SCORE], result[IS_ADVERSARIAL], result[CORRECTED], result[NO_DEFENSE]
            )
            self.metrics.observe_detector(
                detector.name, detector.version, "serving", result[INSTANCE_SCORE], result[IS_ADVERSARIAL]
            )
            for req, res in lane.assembler.add(batch, {k: result[k] for k in self._fields}):
                self._publish(lane, req, res)
            if detector.shadow is not None and detector.shadow_version is not None:
                self._shadow(lane, detector.shadow_version, detector.shadow, batch, result)

    def _shadow(self, lane: Lane, version: int, scorer: StreamScorer, batch: Batch, serving: dict) -> None:
        """The candidate on the same instances, after the answers are sent: metrics and the feedback join
        only, never answers, captures or commits; a shadow that fails costs its own figures, nothing else."""
        try:
            shadow = scorer(batch.x)
        except Exception as exc:
            log.warning("shadow version %d of %s failed on a batch of %d: %s", version, lane.name, batch.size, exc)
            return
        self.metrics.observe_detector(lane.name, version, "shadow", shadow[INSTANCE_SCORE], shadow[IS_ADVERSARIAL])
        self.metrics.shadow_agreement(lane.name, serving[IS_ADVERSARIAL], shadow[IS_ADVERSARIAL])
        if self.join is not None:
            joined = {k: shadow[k] for k in (*PREDICTIONS, IS_ADVERSARIAL)}
            for req, fields in lane.shadow_parts.add(batch, joined):
                self.join.remember_shadow(req.id, str(version), fields)

    def _scoring_failed(self, lane: Lane, batch: Batch, exc: Exception) -> None:
        log.error("scoring a batch of %d instances with %s failed: %s", batch.size, lane.name, exc)
        for req in {id(s.request): s.request for s in batch.segments}.values():
            lane.batcher.discard(req)
            lane.assembler.discard(req)
            lane.shadow_parts.discard(req)
            self.sink.dead_letter(req.record, "scoring", f"{type(exc).__name__}: {exc}"[:500])

    def _take_new_detectors(self) -> None:
        """A repository change, loaded and warmed up off the loop, takes over here: between batches."""
        detectors = self.detectors.changed()
        if detectors is None:
            return
        changes = self.lanes.apply(detectors, drain=lambda lane: self._score_lane(lane, force=True))
        self.metrics.set_detectors(dict(detectors))
        if changes:
            log.info("detectors changed: %s", "; ".join(changes))

    def _feedback(self, join: FeedbackJoin, raw: RawRecord) -> None:
        """Labels for an earlier answer: joined and counted; malformed ones are dead-lettered."""
        try:
            request_id, labels = parse_feedback(raw.value)
            join.label(request_id, labels)
        except DecodeError as exc:
            self.metrics.feedback_outcome(Outcome("dead_letter"))
            self.sink.dead_letter(raw, exc.reason, f"feedback: {exc.message}")
            return
        self.sink.skip(raw, "feedback")

    def _capture_flagged(self, topic: str, lane: Lane, req: Request, result: dict[str, np.ndarray]) -> None:
        """Every request with a flagged instance, sampled by its id (a redelivery decides the same way)."""
        flagged = np.flatnonzero(result[IS_ADVERSARIAL])
        if flagged.size == 0:
            return
        if zlib.crc32(req.id.encode("utf-8", "replace")) / 2**32 >= self.cfg.flagged.sample_rate:
            self.metrics.flagged_capture("sampled_out")
            return
        keep = flagged[: self.cfg.flagged.max_instances]
        fields = {INSTANCE_INDEX: keep.astype(np.int64), **{k: v[keep] for k, v in result.items()}}
        try:
            payload, headers = encode_flagged(req, req.instances[keep], fields, lane.answer_info)
        except Exception as exc:  # a capture is a copy: it costs itself, never the answer
            log.warning("flagged capture of request %r could not be encoded: %s", req.id, exc)
            self.metrics.flagged_capture("rejected")
            return
        if flagged.size > keep.size:
            headers.append(("flagged-truncated-from", str(flagged.size).encode()))
        self.sink.capture(topic, req.record, payload, headers)

    def _publish(self, lane: Lane, req: Request, result: dict[str, np.ndarray]) -> None:
        """Answer (and remember it for feedback), or under a monitor-only kafka.publish, the flagged
        instances alone or nothing; capture flagged requests when kafka.flagged_topic is set."""
        if self.kafka.flagged_topic:
            self._capture_flagged(self.kafka.flagged_topic, lane, req, result)
        if self.kafka.publish != "answers":
            flagged = np.flatnonzero(result[IS_ADVERSARIAL])
            if self.kafka.publish == "nothing" or flagged.size == 0:
                self.sink.skip(req.record, "monitored")
                return
            result = {INSTANCE_INDEX: flagged.astype(np.int64), **{k: v[flagged] for k, v in result.items()}}
        if (
            self.sink.answer(req, result, lane.answer_info) and self.join is not None
        ):  # only answers that go out can be labelled
            self.join.remember(req.id, result, None, lane.name, lane.answer_info["model_version"])

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
        for tp in self._assigned - self._unpositioned:
            hw = self.consumer.highwater(tp)
            point = self.tracker.commit_point(tp)
            if point is None:
                try:
                    point = self.consumer.position(tp, timeout_ms=100)
                except KafkaError:
                    continue
            if hw is not None and point is not None:
                self.metrics.set_lag(tp.topic, tp.partition, max(0, hw - point))
        self.metrics.set_kafka_up(self._broker_connected())

    def _broker_connected(self) -> bool:
        """Whether the consumer holds at least one live broker connection (its own connection-count metric)."""
        try:
            connections = self.consumer.metrics().get("consumer-metrics", {}).get("connection-count", 0)
            return bool(connections > 0)
        except KafkaError:
            return False
