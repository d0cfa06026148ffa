"""The pipeline's Prometheus metrics (prometheus-client conventions: adae_ prefix, base units, _total).

Per-instance figures are recorded per batch with numpy (a custom collector for the score histogram),
not with one Python call per instance. The flag-rate window and the KS drift are derived from a ring
buffer of recent scores; drift is recomputed on a background thread, off the hot path.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from adae_stream.errors import DEAD_LETTER_REASONS, SKIP_KINDS
from adae_stream.feedback.outcome import Outcome
from adae_stream.monitoring.detector_metrics import DetectorMetrics
from adae_stream.monitoring.drift import ScoreWindow, ks_2samp
from adae_stream.monitoring.evidence_metrics import EvidenceMetrics
from adae_stream.monitoring.feedback_metrics import FeedbackMetrics
from adae_stream.monitoring.histograms import NumpyHistogram, score_buckets
from adae_stream.scoring import ServingDetector

# A `_created` series beside every counter and histogram doubles the series count for a timestamp that
# Prometheus does not use (it detects counter resets itself); off for the whole process.
disable_created_metrics()


class PipelineMetrics:
    def __init__(
        self,
        threshold: float | None,
        reference_scores: np.ndarray | None = None,
        n_classes: int | None = None,
        window_size: int = 2000,
        max_class_labels: int = 20,
        build_info: dict[str, str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry = registry or CollectorRegistry()
        self._define_scoring(registry, threshold)
        self._define_service(registry, build_info)
        self.feedback = FeedbackMetrics(registry)
        self.evidence = EvidenceMetrics(registry)
        self.detectors = DetectorMetrics(registry, window_size)
        self.class_counter = None
        if n_classes is not None and n_classes <= max_class_labels:
            self.class_counter = Counter(
                "adae_predicted_class", "Corrected predictions by class.", ["class"], registry=registry
            )
            for c in range(n_classes):
                self.class_counter.labels(str(c))
        self.threshold.set(float("nan") if threshold is None else threshold)
        self.reference = (
            None if reference_scores is None or len(reference_scores) == 0 else np.asarray(reference_scores)
        )
        self.window = ScoreWindow(window_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the series, by concern; every labelled series is created at 0 so that rates exist from the start
    def _define_scoring(self, registry: CollectorRegistry, threshold: float | None) -> None:
        """What the detector did: instances, flags, corrections, outcomes per record, scores, batches."""
        self.instances = Counter("adae_instances", "Instances scored by the detector.", registry=registry)
        self.flagged = Counter(
            "adae_flagged", "Instances whose adversarial score exceeded the threshold.", registry=registry
        )
        self.changed = Counter(
            "adae_corrected_changed",
            "Instances whose corrected prediction differs from the undefended one.",
            registry=registry,
        )
        self.requests = Counter("adae_requests", "Input records handled, by outcome.", ["status"], registry=registry)
        self.summaries = Counter(
            "adae_summary_records",
            "Batch summaries for the fleet's change detectors (kafka.summary_topic), by result (sent, rejected).",
            ["result"],
            registry=registry,
        )
        self.dead_letter = Counter(
            "adae_dead_letter", "Records sent to the dead-letter topic, by reason.", ["reason"], registry=registry
        )
        self.skipped = Counter(
            "adae_skipped",
            "Records that are not requests (responses sharing the topic), by kind.",
            ["kind"],
            registry=registry,
        )
        # ok: answered; dead_letter; skipped: not a request; monitored: scored, nothing to publish (kafka.publish);
        # feedback: a feedback record handled
        for status in ("ok", "dead_letter", "skipped", "monitored", "feedback"):
            self.requests.labels(status)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letter.labels(reason)
        for kind in SKIP_KINDS:
            self.skipped.labels(kind)
        self.score = NumpyHistogram(
            "adae_score", "Adversarial scores of instances (KL divergence, nats).", score_buckets(threshold), registry
        )
        self.flag_rate = Gauge(
            "adae_flag_rate", "Fraction of flagged instances over the recent score window.", registry=registry
        )
        self.threshold = Gauge("adae_threshold", "The detector's adversarial-score threshold.", registry=registry)
        self.drift = Gauge(
            "adae_score_drift", "Two-sample KS statistic: recent scores vs the reference scores.", registry=registry
        )
        self.drift_p = Gauge(
            "adae_score_drift_p_value", "Asymptotic p-value of the KS drift statistic.", registry=registry
        )
        self.batch_size = Histogram(
            "adae_batch_size",
            "Instances per scored batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "adae_batch_seconds",
            "Scoring time per batch (compiled detector call only).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.end_to_end = Histogram(
            "adae_end_to_end_seconds",
            "From the input record's timestamp to the broker's ack of its answer.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )

    def _define_service(self, registry: CollectorRegistry, build_info: dict[str, str] | None) -> None:
        """The service itself: consumer lag, the broker connection, readiness, what is running."""
        self.lag = Gauge(
            "adae_consumer_lag",
            "Records behind the partition's high watermark (uncommitted).",
            ["topic", "partition"],
            registry=registry,
        )
        self.kafka_up = Gauge("adae_kafka_up", "1 while the Kafka clients are connected, else 0.", registry=registry)
        self.transactions = Counter(
            "adae_transactions",
            "Transactions committed (delivery: exactly_once): answers and input offsets made visible together.",
            registry=registry,
        )
        self.ready = Gauge(
            "adae_ready",
            "1 while the detector is loaded, partitions are assigned and no fatal error occurred.",
            registry=registry,
        )
        # adae_build_info{version, detector, runtime} 1: what is running, for dashboards to join on
        self.build = Info(
            "adae_build",
            "The running adae-stream, the version that saved its detector, and its runtime.",
            registry=registry,
        )
        self.build.info({key: str(value) for key, value in (build_info or {}).items()})

    # --- hot path (per batch / per request)
    def observe_batch(self, n: int, seconds: float) -> None:
        self.batch_size.observe(n)
        self.batch_seconds.observe(seconds)

    def observe_results(
        self, scores: np.ndarray, flags: np.ndarray, corrected: np.ndarray, no_defense: np.ndarray
    ) -> None:
        n = len(scores)
        if n == 0:
            return
        self.instances.inc(n)
        self.flagged.inc(int(flags.sum()))
        self.changed.inc(int((corrected != no_defense).sum()))
        self.score.observe_many(scores)
        self.window.add(scores, flags)
        self.flag_rate.set(self.window.flag_rate())
        if self.class_counter is not None:
            for c, count in zip(*np.unique(corrected, return_counts=True), strict=True):
                self.class_counter.labels(str(int(c))).inc(int(count))

    def request_done(self, status: str, reason: str | None = None, end_to_end_s: float | None = None) -> None:
        self.requests.labels(status).inc()
        if status == "dead_letter":
            self.dead_letter.labels(reason).inc()
        elif status == "skipped":
            self.skipped.labels(reason).inc()
        if end_to_end_s is not None and end_to_end_s >= 0:
            self.end_to_end.observe(end_to_end_s)

    def set_lag(self, topic: str, partition: int, lag: int | None) -> None:
        """lag None forgets the series (the partition was revoked)."""
        if lag is None:
            try:
                self.lag.remove(topic, str(partition))
            except KeyError:
                pass
        else:
            self.lag.labels(topic, str(partition)).set(lag)

    def transaction_committed(self) -> None:
        self.transactions.inc()

    def set_kafka_up(self, up: bool) -> None:
        self.kafka_up.set(1 if up else 0)

    def feedback_outcome(self, outcome: Outcome) -> None:
        self.feedback.outcome(outcome)
        self.evidence.record(outcome.evidence)
        for version in outcome.versions:
            self.detectors.feedback(version)

    def set_feedback_state(self, answers: int, instances: int, pending: int) -> None:
        self.feedback.state(answers, instances, pending)

    def flagged_capture(self, result: str) -> None:
        self.feedback.flagged_captured.labels(result).inc()

    def shadow_published(self, result: str) -> None:
        self.feedback.shadow_records.labels(result).inc()

    def summary_published(self, result: str) -> None:
        self.summaries.labels(result).inc()

    # --- per detector, version and role (detector.repository; a single detector.path reports as version 1)
    def observe_detector(self, detector: str, version: int, role: str, scores: np.ndarray, flags: np.ndarray) -> None:
        self.detectors.observe(detector, version, role, scores, flags)

    def shadow_agreement(self, detector: str, serving: np.ndarray, shadow: np.ndarray) -> None:
        self.detectors.agreement(detector, serving, shadow)

    def set_detectors(self, detectors: Mapping[str, ServingDetector]) -> None:
        self.detectors.serve(detectors)

    def detector_load_failed(self, detector: str) -> None:
        self.detectors.load_failures.labels(detector).inc()

    # --- drift, off the hot path
    def update_drift(self) -> None:
        self.detectors.update_drift()
        if self.reference is None:
            return
        scores, _ = self.window.snapshot()
        if len(scores) < 10:
            return
        statistic, p_value = ks_2samp(scores, self.reference)
        self.drift.set(statistic)
        self.drift_p.set(p_value)

    def start_drift_thread(self, interval_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.update_drift()

        self._thread = threading.Thread(target=loop, name="adae-drift", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
