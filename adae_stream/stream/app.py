"""The pipeline: owns the Kafka consumer, producer and loop (an Application in the Quix Streams sense).

Loop: poll -> decode (bad records to the dead-letter topic) -> micro-batch -> score (one compiled call)
-> split -> encode -> produce. A record's offset becomes committable only once the broker acked its
answer (OffsetTracker), so delivery is at-least-once even though batches mix polls and partitions.
Revocation and stop: stop polling, score what is pending, flush, commit, close.
"""
from __future__ import annotations

import gc
import logging
import os
import queue
import socket
import threading
import time
from typing import Any, Protocol

import numpy as np
from kafka import AsyncConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import CommitFailedError, KafkaConfigurationError, KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata, TopicPartition

from adae_stream.config import Config, kafka_security_kwargs
from adae_stream.stream.batcher import Assembler, Batch, Batcher
from adae_stream.stream.client_fixes import keep_pending_join_visible
from adae_stream.stream.codecs import DecodeError, RawRecord, Request, decode, encode
from adae_stream.stream.offsets import OffsetTracker

log = logging.getLogger(__name__)

DLQ_OVERHEAD = 64 * 1024
IDLE_POLL_MS = 10  # the longest the loop blocks in poll() (see Pipeline._poll_timeout_ms)


class BatchScorer(Protocol):
    """The stream's whole view of the detector."""

    input_shape: tuple[int, ...]
    threshold: float
    version: str

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]: ...


class Metrics(Protocol):
    """What the pipeline reports; adae_stream.monitoring.metrics.PipelineMetrics implements it."""

    def observe_batch(self, n: int, seconds: float) -> None: ...
    def observe_results(self, scores: np.ndarray, flags: np.ndarray, corrected: np.ndarray, no_defense: np.ndarray) -> None: ...
    def request_done(self, status: str, reason: str | None = None, end_to_end_s: float | None = None) -> None: ...
    def set_lag(self, topic: str, partition: int, lag: int | None) -> None: ...
    def set_kafka_up(self, up: bool) -> None: ...


class NullMetrics:
    """No-op metrics, so the loop never branches on whether metrics are enabled."""

    def observe_batch(self, n, seconds): pass
    def observe_results(self, scores, flags, corrected, no_defense): pass
    def request_done(self, status, reason=None, end_to_end_s=None): pass
    def set_lag(self, topic, partition, lag): pass
    def set_kafka_up(self, up): pass


class PipelineError(RuntimeError):
    """A fatal pipeline condition (broker unreachable past the deadline, publish failure)."""


class _Rebalance(AsyncConsumerRebalanceListener):
    """Rebalance hooks, run by kafka-python 3 on its I/O loop (where blocking client calls are forbidden).

    Revocation is handled right here: while this hook runs, the pipeline thread is parked inside
    ``consumer.poll()`` (which awaits the hook before it sends JoinGroup), so finishing in-flight work
    from this loop touches nothing concurrently; the commit is awaited with the non-blocking
    ``commit_async``, and the group only moves our partitions once it is done. Assignment is queued: the
    pipeline thread seeks the new partitions to their committed offsets (blocking calls) before it
    ingests anything else.
    """

    def __init__(self, pipeline: "Pipeline") -> None:
        self.pipeline = pipeline

    async def on_partitions_revoked(self, revoked):
        p = self.pipeline
        if p._closing or not revoked:
            return
        log.info("partitions revoked: %s; finishing in-flight work first", sorted(f"{tp.topic}-{tp.partition}" for tp in revoked))
        try:
            offsets = p._finish_in_flight()
            if p.exactly_once:
                p._commit_transaction()  # blocks only on the producer's own I/O thread
            elif offsets:
                await p.consumer.commit_async({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
                p.tracker.mark_committed(offsets)
        except Exception as exc:
            log.error("could not commit in-flight work before revocation: %s (its new owner redoes it)", exc)
        p._forget(revoked)

    async def on_partitions_assigned(self, assigned):
        self.pipeline._assignments.put(set(assigned))

    async def on_partitions_lost(self, lost):
        log.warning("partitions lost (evicted from the group): %s; uncommitted work will be redone by their new owner",
                    sorted(f"{tp.topic}-{tp.partition}" for tp in lost))
        self.pipeline._forget(lost)


def ensure_topics(cfg: Config, bootstrap: str, bootstrap_timeout_ms: int = 30000) -> None:
    """Create the input, output and dead-letter topics if missing (kafka.create_topics)."""
    k = cfg.kafka
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{k.client_id}-admin", bootstrap_timeout_ms=bootstrap_timeout_ms,
                             **kafka_security_kwargs(k))
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in dict.fromkeys([k.input_topic, k.output_topic, k.dead_letter_topic]) if t not in existing]
        for topic in wanted:
            try:
                admin.create_topics([NewTopic(topic, k.partitions, k.replication_factor)])
                log.info("created topic %s (%d partitions)", topic, k.partitions)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


class Pipeline:
    def __init__(self, config: Config, scorer: BatchScorer, metrics: Metrics | None = None, bootstrap_servers: str | None = None) -> None:
        self.cfg = config
        self.k = config.kafka
        self.scorer = scorer
        self.metrics: Metrics = metrics if metrics is not None else NullMetrics()
        self.bootstrap = bootstrap_servers or self.k.bootstrap_servers
        if self.bootstrap == "embedded":
            raise ValueError("resolve 'embedded' to a broker address before building the Pipeline (see adae_stream.runner)")
        self.batcher = Batcher(config.batching.max_batch_size, config.batching.max_batch_delay_ms / 1000.0)
        self.assembler = Assembler()
        self.tracker = OffsetTracker()
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self._stop = threading.Event()
        self._closing = False
        self._commit_in_flight = False
        self._out_partitions: set[int] = set()
        self._assignments: queue.SimpleQueue = queue.SimpleQueue()
        self._fatal: str | None = None
        self._assigned: set = set()
        self._last_commit = 0.0
        self._last_housekeeping = 0.0
        self.last_loop = time.monotonic()
        self.info = {"model_name": config.detector.model_name, "threshold": float(scorer.threshold), "detector_version": scorer.version}
        self._fields = ["corrected", "is_adversarial"]
        if config.detector.return_instance_score:
            self._fields.append("instance_score")
        if config.detector.return_all_predictions:
            self._fields += ["no_defense", "defense"]
        self._producer_max = max(2 * self.k.max_message_bytes + DLQ_OVERHEAD, 1024 * 1024)
        self.stats = {"ok": 0, "dead_letter": 0, "batches": 0, "instances": 0, "transactions": 0}
        self.exactly_once = config.delivery == "exactly_once"
        self._in_txn = False

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the loop to finish: it drains, commits and closes (safe from signal handlers and threads)."""
        self._stop.set()

    @property
    def ready(self) -> bool:
        return self.consumer is not None and bool(self._assigned) and self._fatal is None

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
            while not self._stop.is_set() and self._fatal is None:
                self.last_loop = time.monotonic()
                polled = self.consumer.poll(timeout_ms=self._poll_timeout_ms())
                repositioned = self._apply_assignments()
                for tp, records in polled.items():
                    if tp in repositioned:
                        continue  # fetched before the seek: they come again from the committed offset
                    for rec in records:
                        self._ingest(tp, rec)
                self._score(force=False)
                self._commit(force=False)
                self._housekeeping()
        except PipelineError as exc:
            self._fatal = str(exc)
        finally:
            gc.unfreeze()
            self._shutdown()
        if self._fatal:
            log.error("pipeline stopped: %s", self._fatal)
            return 1
        return 0

    def _client_common(self, bootstrap_timeout_ms: int = 30000) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, "client_id": self.k.client_id, "bootstrap_timeout_ms": bootstrap_timeout_ms,
                **kafka_security_kwargs(self.k)}

    def _transactional_kwargs(self) -> dict[str, Any]:
        """exactly_once: a transactional producer. The id is unique per process; zombie fencing comes from
        the consumer group metadata sent with the offsets (KIP-447), not from a static id."""
        if not self.exactly_once:
            return {}
        tid = f"{self.k.client_id}-{self.k.group_id}-{socket.gethostname()}-{os.getpid()}"
        return {"transactional_id": tid, "enable_idempotence": True}

    def _connect(self) -> bool:
        """Build the clients, retrying with exponential backoff until kafka.connect_timeout_s."""
        deadline = time.monotonic() + self.k.connect_timeout_s
        delay = 0.5
        while not self._stop.is_set():
            # each attempt may wait for the broker at most 3 s, so retries (and their log lines) keep coming
            attempt_ms = int(1000 * max(0.5, min(3.0, deadline - time.monotonic())))
            try:
                if self.k.create_topics:
                    ensure_topics(self.cfg, self.bootstrap, attempt_ms)
                self.producer = KafkaProducer(
                    acks="all", linger_ms=self.k.linger_ms, batch_size=1024 * 1024, max_request_size=self._producer_max,
                    compression_type=self.k.compression_type, delivery_timeout_ms=int(self.k.delivery_timeout_s * 1000),
                    request_timeout_ms=min(30000, int(self.k.delivery_timeout_s * 1000) // 2), max_in_flight_requests_per_connection=1,
                    max_block_ms=int(self.k.delivery_timeout_s * 1000),
                    **self._transactional_kwargs(),
                    **self._client_common(attempt_ms),
                )
                if self.exactly_once:
                    self.producer.init_transactions()
                self.consumer = KafkaConsumer(
                    group_id=self.k.group_id, enable_auto_commit=False, auto_offset_reset=self.k.auto_offset_reset,
                    session_timeout_ms=self.k.session_timeout_ms, heartbeat_interval_ms=self.k.heartbeat_interval_ms,
                    fetch_max_wait_ms=self.k.fetch_max_wait_ms, max_poll_records=self.k.max_poll_records,
                    max_partition_fetch_bytes=max(1024 * 1024, self.k.max_message_bytes + DLQ_OVERHEAD),
                    fetch_max_bytes=max(50 * 1024 * 1024, 2 * self.k.max_message_bytes),
                    isolation_level="read_committed" if self.cfg.delivery == "exactly_once" else "read_uncommitted",
                    **self._client_common(attempt_ms),
                )
                keep_pending_join_visible(self.consumer)
                self.consumer.subscribe([self.k.input_topic], listener=_Rebalance(self))
                self.metrics.set_kafka_up(True)
                log.info("connected to Kafka at %s; consuming %s as group %s", self.bootstrap, self.k.input_topic, self.k.group_id)
                return True
            except KafkaConfigurationError as exc:
                self._close_clients()
                raise PipelineError(f"invalid Kafka client settings: {exc}") from exc
            except (KafkaError, OSError) as exc:
                self.metrics.set_kafka_up(False)
                self._close_clients()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PipelineError(f"Kafka at {self.bootstrap} unreachable for {self.k.connect_timeout_s:.0f}s (kafka.connect_timeout_s): {exc!r}")
                log.warning("Kafka at %s not reachable (%s); retrying in %.1fs (giving up in %.0fs)", self.bootstrap, type(exc).__name__, min(delay, left), left)
                self._stop.wait(min(delay, left))
                delay = min(delay * 2, 10.0)
        return False

    def _shutdown(self) -> None:
        self._closing = True  # close() may revoke: the drain below already did that work
        try:
            if self.consumer is not None and self.producer is not None:
                self._drain()
        except Exception as exc:  # closing must go on; nothing more is committed past unpublished work anyway
            log.error("error while draining at shutdown: %s", exc)
            self._fatal = self._fatal or f"drain failed: {exc}"
        finally:
            self._close_clients()
            log.info("pipeline closed: %d answered, %d dead-lettered, %d batches", self.stats["ok"], self.stats["dead_letter"], self.stats["batches"])

    def _close_clients(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except Exception as exc:
                log.warning("closing consumer: %s", exc)
            self.consumer = None
        if self.producer is not None:
            try:
                self.producer.close(timeout=5)
            except Exception as exc:
                log.warning("closing producer: %s", exc)
            self.producer = None

    def _drain(self) -> None:
        """Score everything pending, wait for every answer's ack, commit: used at stop."""
        self._finish_in_flight()
        self._commit(force=True)

    # ------------------------------------------------------------------ rebalance
    def _finish_in_flight(self) -> dict:
        """Score what is pending, wait for every answer's ack; return the offsets now safe to commit."""
        self._score(force=True)
        self.producer.flush(timeout=self.k.delivery_timeout_s)
        return {tp: off for tp, off in self.tracker.to_commit().items() if tp in self._assigned}

    def _forget(self, partitions) -> None:
        self.tracker.remove(partitions)
        self._assigned -= set(partitions)
        for tp in partitions:
            self.metrics.set_lag(tp.topic, tp.partition, None)

    def _apply_assignments(self) -> set:
        """Handle queued assignments; returns the partitions that were repositioned."""
        repositioned: set = set()
        while True:
            try:
                assigned = self._assignments.get_nowait()
            except queue.Empty:
                return repositioned
            self._on_assigned(assigned)
            repositioned |= assigned

    def _on_assigned(self, assigned) -> None:
        """Resume every assigned partition from its committed offset (or the reset policy when none).

        kafka-python keeps its in-memory fetch position for partitions that stay assigned across a
        rebalance; if the broker's log was truncated or re-created meanwhile, that position would skip
        records. Seeking to the committed offset is the at-least-once contract, whatever happened.
        """
        self.tracker.remove(assigned)
        for tp in assigned:
            try:
                committed = self.consumer.committed(tp, timeout_ms=int(self.k.delivery_timeout_s * 1000))
            except KafkaError as exc:
                log.warning("could not read the committed offset of %s-%d (%s); keeping the client's position", tp.topic, tp.partition, exc)
                continue
            if committed is not None:
                self.consumer.seek(tp, committed)
            elif self.k.auto_offset_reset == "earliest":
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek_to_end(tp)
        self._assigned |= set(assigned)
        log.info("partitions assigned: %s", sorted(f"{tp.topic}-{tp.partition}" for tp in assigned))

    # ------------------------------------------------------------------ per record
    def _poll_timeout_ms(self) -> int:
        """At most IDLE_POLL_MS even when nothing is pending. kafka-python 3's poll() sleeps
        min(timeout, retry_backoff_ms) when it finds no fetch in flight, and it can find none in the
        instant a fetch response is being handed over: with a 100 ms timeout, answers then waited
        100 ms behind data that had already arrived (the latency benchmark's p99 tail). A short
        timeout bounds that sleep; an idle loop turn costs microseconds."""
        due = self.batcher.time_until_due()
        return IDLE_POLL_MS if due is None else int(min(IDLE_POLL_MS, due * 1000.0))

    def _ingest(self, tp: TopicPartition, rec) -> None:
        self.tracker.add(tp, rec.offset)
        raw = RawRecord(rec.topic, rec.partition, rec.offset, rec.key, rec.value, rec.headers or [], rec.timestamp)
        try:
            req = decode(raw, self.scorer.input_shape, self.k.max_message_bytes)
        except DecodeError as exc:
            self._dead_letter(raw, exc.reason, exc.message)
            return
        req.arrival = time.monotonic()
        self.batcher.add(req)

    def _score(self, force: bool) -> None:
        while (batch := self.batcher.take(force=force)) is not None:
            t0 = time.perf_counter()
            try:
                result = self.scorer(batch.x)
            except Exception as exc:  # a failing batch costs its requests, not the process
                self._scoring_failed(batch, exc)
                continue
            elapsed = time.perf_counter() - t0
            self.stats["batches"] += 1
            self.stats["instances"] += batch.size
            self.metrics.observe_batch(batch.size, elapsed)
            self.metrics.observe_results(result["instance_score"], result["is_adversarial"], result["corrected"], result["no_defense"])
            for req, res in self.assembler.add(batch, {k: result[k] for k in self._fields}):
                self._publish(req, res)

    def _scoring_failed(self, batch: Batch, exc: Exception) -> None:
        log.error("scoring a batch of %d instances failed: %s", batch.size, exc)
        for req in {id(s.request): s.request for s in batch.segments}.values():
            self.batcher.discard(req)
            self.assembler.discard(req)
            self._dead_letter(req.record, "scoring", f"{type(exc).__name__}: {exc}"[:500])

    def _publish(self, req: Request, result: dict[str, np.ndarray]) -> None:
        payload, headers = encode(req, result, self.info)
        rec = req.record
        tp = TopicPartition(rec.topic, rec.partition)
        what = f"answer to request {req.id!r} ({rec.topic}-{rec.partition}@{rec.offset})"
        try:
            self._begin_transaction()
            future = self.producer.send(self.k.output_topic, value=payload, key=rec.key, headers=headers, partition=self._out_partition(rec))
        except Exception as exc:  # rejected before it left: invalid topic, record too large, metadata timeout
            self._publish_failed(what, exc)
            return

        def ok(_md, tp=tp, offset=rec.offset, ts=rec.timestamp):
            self.tracker.done(tp, offset)
            self.stats["ok"] += 1
            self.metrics.request_done("ok", end_to_end_s=(time.time() * 1000.0 - ts) / 1000.0 if ts and ts > 0 else None)

        future.add_callback(ok)
        future.add_errback(self._publish_failed, what)

    def _dead_letter(self, rec: RawRecord, reason: str, message: str) -> None:
        log.warning("dead-letter %s-%d@%d: %s: %s", rec.topic, rec.partition, rec.offset, reason, message)
        value = rec.value or b""
        headers = [(k, v) for k, v in (rec.headers or []) if not k.startswith("error-")]
        headers += [("error-reason", reason.encode()), ("error-message", message.encode("utf-8", "replace")[:4000]),
                    ("source-topic", rec.topic.encode()), ("source-partition", str(rec.partition).encode()), ("source-offset", str(rec.offset).encode())]
        if len(value) > self._producer_max - DLQ_OVERHEAD:
            headers.append(("error-truncated-from", str(len(value)).encode()))
            value = value[: self._producer_max - DLQ_OVERHEAD]
        tp = TopicPartition(rec.topic, rec.partition)
        what = f"dead-letter record for {rec.topic}-{rec.partition}@{rec.offset}"
        try:
            self._begin_transaction()
            future = self.producer.send(self.k.dead_letter_topic, value=value, key=rec.key, headers=headers)
        except Exception as exc:
            self._publish_failed(what, exc)
            return

        def ok(_md, tp=tp, offset=rec.offset):
            self.tracker.done(tp, offset)
            self.stats["dead_letter"] += 1
            self.metrics.request_done("dead_letter", reason=reason)

        future.add_callback(ok)
        future.add_errback(self._publish_failed, what)

    def _publish_failed(self, what: str, exc: Exception) -> None:
        # kafka-python calls errbacks as f(*args, exception); runs on the producer's I/O thread (or inline
        # for send-time errors). The record stays not-done, so neither its offset nor any later one of its
        # partition is ever committed. The first failure is fatal and logged; the rest follow from it.
        if self._fatal is None:
            self._fatal = f"publishing the {what} failed: {exc!r}; its offset is not committed"
            log.error(self._fatal)
        else:
            log.debug("also failed: %s: %r", what, exc)
        self._stop.set()

    def _out_partition(self, rec: RawRecord) -> int | None:
        """Keyed records follow the key (same partitioner as the input); unkeyed keep the input partition."""
        if rec.key is not None:
            return None
        if not self._out_partitions:  # looked up once (partitions are never removed from a topic)
            self._out_partitions = set(self.producer.partitions_for(self.k.output_topic) or ())
        return rec.partition if rec.partition in self._out_partitions else None

    # ------------------------------------------------------------------ commits and housekeeping
    def _commit(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < self.k.commit_interval_ms / 1000.0:
            return
        self._last_commit = now
        if self.exactly_once:
            self._commit_transaction()
            return
        offsets = {tp: off for tp, off in self.tracker.to_commit().items() if tp in self._assigned}
        if not offsets:
            return
        request = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
        if not force:
            # In the loop: asynchronous, one at a time, so a broker round trip never stalls the records behind it.
            if self._commit_in_flight:
                return
            self._commit_in_flight = True
            future = self.consumer.commit_async(request)
            future.add_callback(lambda _r: self.tracker.mark_committed(offsets))
            future.add_errback(lambda exc: log.warning("offset commit failed: %s; will retry", exc))
            future.add_both(lambda _r: setattr(self, "_commit_in_flight", False))
            return
        try:
            self.consumer.commit(request, timeout_ms=int(self.k.delivery_timeout_s * 1000))
            self.tracker.mark_committed(offsets)
        except CommitFailedError as exc:
            log.warning("offset commit rejected (group rebalanced): %s; those records will be redelivered", exc)
        except KafkaError as exc:  # includes the commit timeout
            log.warning("offset commit failed: %s", exc)

    def _begin_transaction(self) -> None:
        if self.exactly_once and not self._in_txn:
            self.producer.begin_transaction()
            self._in_txn = True

    def _commit_transaction(self) -> None:
        """Commit the open transaction: its answers and the input offsets they cover, atomically."""
        if not self._in_txn:
            return
        self.producer.flush(timeout=self.k.delivery_timeout_s)
        offsets = {tp: off for tp, off in self.tracker.to_commit().items() if tp in self._assigned}
        try:
            if offsets:
                self.producer.send_offsets_to_transaction({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()},
                                                          self.consumer.group_metadata())
            self.producer.commit_transaction()
        except KafkaError as exc:
            try:
                self.producer.abort_transaction()
            except KafkaError:
                pass
            raise PipelineError(f"transaction failed and was aborted: {exc!r}; a restart resumes from the last committed offsets") from exc
        finally:
            self._in_txn = False
        self.tracker.mark_committed(offsets)
        self.stats["transactions"] += 1

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
        for tp in list(self._assigned):
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
            return self.consumer.metrics().get("consumer-metrics", {}).get("connection-count", 0) > 0
        except KafkaError:
            return False
