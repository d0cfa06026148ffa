"""The record path: decode -> route -> lane -> batch -> score -> split -> answer, and the shadow after.

Every step for one record sits inside an error boundary: whatever one record does, it costs that record
(dead-lettered with a reason), never the service. The loop (app.py) owns the clients, the partitions and
the commit; this object owns what happens to a record between the poll and the sink.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable

import numpy as np

from adae_stream.clients import ConsumerRecord
from adae_stream.codecs import INSTANCE_INDEX, RESULT_DTYPES, RawRecord, Request, decode, encode_flagged
from adae_stream.codecs.tensors import conform
from adae_stream.config import Config
from adae_stream.errors import DecodeError, NotARequest
from adae_stream.feedback.answers import encode_shadow
from adae_stream.feedback.outcome import PREDICTIONS
from adae_stream.feedback.summaries import SummaryFold, encode_summary, reference_edges, summarize
from adae_stream.scoring import (
    CORRECTED,
    INSTANCE_SCORE,
    IS_ADVERSARIAL,
    NO_DEFENSE,
    PREDICTION,
    DetectorSource,
    StreamScorer,
    answer_fields,
)
from adae_stream.stream.batcher import Batch
from adae_stream.stream.label_path import LabelPath
from adae_stream.stream.lanes import Lane, Lanes
from adae_stream.stream.routing import Router, parse_routes
from adae_stream.stream.sink import Sink
from adae_stream.stream.telemetry import Metrics

log = logging.getLogger(__name__)


class RecordPath:
    def __init__(
        self,
        cfg: Config,
        detectors: DetectorSource,
        metrics: Metrics,
        sink: Callable[[], Sink],
        labels: LabelPath | None,
    ) -> None:
        """labels: where feedback records go (none without a feedback topic)."""
        self.cfg = cfg
        self.kafka = cfg.kafka
        self.detectors = detectors
        self.router = Router(parse_routes(cfg.detector.routes), getattr(detectors, "default", None))
        self.lanes = Lanes(cfg.batching, detectors.current())
        self.metrics = metrics
        self._sink = sink
        self.labels = labels
        self._edges: dict[int, tuple[tuple[float, float] | None]] = {}  # per scorer: its reference quartiles
        self.summaries: SummaryFold[RawRecord] = SummaryFold()  # sent before each commit (before_commit)
        self._fields = answer_fields(cfg.detector.return_instance_score, cfg.detector.return_all_predictions)
        metrics.set_detectors(dict(detectors.current()))

    @property
    def sink(self) -> Sink:
        return self._sink()

    def ingest(self, rec: ConsumerRecord) -> None:
        raw = RawRecord(rec.topic, rec.partition, rec.offset, rec.key, rec.value, rec.headers or [], rec.timestamp)
        if self.labels is not None and rec.topic == self.kafka.feedback_topic:
            self.labels.ingest(raw)
            return
        try:
            # decoded before its detector is known (the model may be named in the body), then checked
            # against that detector's input
            req = decode(raw, None, self.kafka.max_message_bytes)
            lane = self.lanes.get(self.router.detector_for(req, self.lanes.by_name))
            if lane is None:  # another model's traffic: not bad input, nothing of ours to say
                self.sink.settle(raw, "skipped", "unrouted")
                return
            req.instances = conform(req.instances, lane.input_shape)
        except DecodeError as exc:
            self.sink.dead_letter(raw, exc.reason, exc.message)
            return
        except NotARequest as exc:
            self.sink.settle(raw, "skipped", exc.kind)
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

    def score(self, force: bool) -> None:
        for lane in self.lanes:
            self.score_lane(lane, force)

    def before_commit(self, score: bool = True) -> None:
        """What a commit must cover: the batches' summaries are sent; with ``score`` (a transaction's
        commit), every request read is scored first, in every lane: a transaction must not commit an offset
        below a request it has not answered while it holds a later answer of that partition, which a redo
        would answer twice. An at-least-once commit covers only what was acked: it need not score."""
        if score:
            self.score(force=True)
        self.publish_summaries()

    def publish_summaries(self) -> None:
        topic = self.kafka.summary_topic
        for summary, rec in self.summaries.take():
            if topic is not None:
                value, key = encode_summary(summary), summary.detector.encode()
                self.sink.copy(topic, rec, value, [], self.metrics.summary_published, key=key)

    def score_lane(self, lane: Lane, force: bool) -> None:
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
            self.metrics.observe_batch(batch.size, elapsed)
            self.metrics.observe_results(
                result[INSTANCE_SCORE], result[IS_ADVERSARIAL], result[CORRECTED], result[NO_DEFENSE]
            )
            self.metrics.observe_detector(
                detector.name, detector.version, "serving", result[INSTANCE_SCORE], result[IS_ADVERSARIAL]
            )
            fields = {PREDICTION: result[detector.publish], **{k: result[k] for k in self._fields[1:]}}
            for req, res in lane.assembler.add(batch, fields):
                self._publish(lane, req, res)
            self._summarize(lane.name, detector.version, "serving", detector.scorer, batch, result)
            if detector.shadow is not None and detector.shadow_version is not None:
                self._shadow(lane, detector.shadow_version, detector.shadow, batch, result)

    def _shadow(self, lane: Lane, version: int, scorer: StreamScorer, batch: Batch, serving: dict) -> None:
        """The candidate on the same instances, after the answers are sent: metrics and the shadow topic (for
        the feedback join) only, never answers, captures or commits; a shadow that fails costs its own
        figures, nothing else."""
        try:
            shadow = scorer(batch.x)
        except Exception as exc:
            log.warning("shadow version %d of %s failed on a batch of %d: %s", version, lane.name, batch.size, exc)
            return
        self.metrics.observe_detector(lane.name, version, "shadow", shadow[INSTANCE_SCORE], shadow[IS_ADVERSARIAL])
        self._summarize(lane.name, version, "shadow", scorer, batch, shadow)
        self.metrics.shadow_agreement(lane.name, serving[IS_ADVERSARIAL], shadow[IS_ADVERSARIAL])
        shadow_topic = self.kafka.shadow_topic
        if shadow_topic is not None:  # every replica's join reads it (join_tail.py)
            joined = {k: shadow[k] for k in (*PREDICTIONS, IS_ADVERSARIAL)}
            for req, fields in lane.shadow_parts.add(batch, joined):
                value = encode_shadow(req.id, lane.name, str(version), fields)
                key = req.id.encode("utf-8", "replace")
                self.sink.copy(shadow_topic, req.record, value, [], self.metrics.shadow_published, key=key)

    def _summarize(
        self, name: str, version: int, role: str, scorer: StreamScorer, batch: Batch, result: dict[str, np.ndarray]
    ) -> None:
        """The batch's counts for the fleet's change detectors (feedback/summaries.py), folded with the other
        batches of this commit and sent before it (before_commit): under exactly_once in the transaction of
        their answers, so a batch redone is counted once."""
        topic = self.kafka.summary_topic
        if topic is None:
            return
        edges = self._edges.get(id(scorer))
        if edges is None:
            edges = self._edges[id(scorer)] = (reference_edges(scorer.info.reference_scores),)
        summary = summarize(
            name,
            version,
            role,
            time.time(),
            result[INSTANCE_SCORE],
            result[IS_ADVERSARIAL],
            result[NO_DEFENSE],
            edges[0],
        )
        self.summaries.add(summary, batch.segments[-1].request.record)

    def _scoring_failed(self, lane: Lane, batch: Batch, exc: Exception) -> None:
        log.error("scoring a batch of %d instances with %s failed: %s", batch.size, lane.name, exc)
        for req in {id(s.request): s.request for s in batch.segments}.values():
            lane.batcher.discard(req)
            lane.assembler.discard(req)
            lane.shadow_parts.discard(req)
            self.sink.dead_letter(req.record, "scoring", f"{type(exc).__name__}: {exc}"[:500])

    def take_new_detectors(self) -> None:
        """A repository change, loaded and warmed up off the loop, takes over here: between batches."""
        detectors = self.detectors.changed()
        if detectors is None:
            return
        changes = self.lanes.apply(detectors, drain=lambda lane: self.score_lane(lane, force=True))
        self.metrics.set_detectors(dict(detectors))
        self._edges.clear()
        if changes:
            log.info("detectors changed: %s", "; ".join(changes))

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
        self.sink.copy(topic, req.record, payload, headers, self.metrics.flagged_capture, key=req.record.key)

    def _publish(self, lane: Lane, req: Request, result: dict[str, np.ndarray]) -> None:
        """Answer, or under a monitor-only kafka.publish, the flagged
        instances alone or nothing; capture flagged requests when kafka.flagged_topic is set."""
        if self.kafka.flagged_topic:
            self._capture_flagged(self.kafka.flagged_topic, lane, req, result)
        if self.kafka.publish != "answers":
            flagged = np.flatnonzero(result[IS_ADVERSARIAL])
            if self.kafka.publish == "nothing" or flagged.size == 0:
                self.sink.settle(req.record, "monitored")
                return
            result = {INSTANCE_INDEX: flagged.astype(np.int64), **{k: v[flagged] for k, v in result.items()}}
        self.sink.answer(req, result, lane.answer_info)  # the join reads it back from the output topic
