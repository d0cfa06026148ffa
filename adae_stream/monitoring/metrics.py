"""The pipeline's Prometheus metrics (prometheus-client conventions: adae_ prefix, base units, _total).

Per-instance figures are recorded per batch with numpy (a custom collector for the score histogram),
not with one Python call per instance. The flag-rate window and the KS drift are derived from a ring
buffer of recent scores; drift is recomputed on a background thread, off the hot path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.core import HistogramMetricFamily

from adae_stream.errors import DEAD_LETTER_REASONS, SKIP_KINDS
from adae_stream.monitoring.drift import ks_2samp
from adae_stream.scoring import ServingDetector
from adae_stream.stream.feedback import FEEDBACK_RESULTS, PREDICTIONS, Outcome

# A `_created` series beside every counter and histogram doubles the series count for a timestamp that
# Prometheus does not use (it detects counter resets itself); off for the whole process.
disable_created_metrics()


def score_buckets(threshold: float | None) -> list[float]:
    """Log-spaced edges from threshold/100 to threshold*100 (4 per decade) plus the threshold itself.

    The threshold edge is the float32 value the compiled graph compares against, so "score <= edge"
    and "not flagged" agree exactly.
    """
    t = float(np.float32(threshold)) if threshold and threshold > 0 else 1.0
    return sorted([float(np.round(t * 10 ** (k / 4), 12)) for k in range(-8, 9) if k != 0] + [t])


class NumpyHistogram:
    """A histogram collector fed with whole arrays at once (np.searchsorted), exported like a Histogram."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.edges = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.edges) + 1, dtype=np.int64)  # last slot: above every edge (+Inf only)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        idx = np.searchsorted(self.edges, values, side="left")  # value <= edge[i] lands in bucket i (le semantics)
        counts = np.bincount(idx, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total_sum = self._sum
        buckets = [(repr(float(e)), float(c)) for e, c in zip(self.edges, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", float(cumulative[-1])))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total_sum)

    def describe(self) -> Iterable[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)


class LabelledNumpyHistogram:
    """NumpyHistogram's series by (detector, version, role), each with the bucket edges of its own threshold."""

    LABELS = ("detector", "version", "role")

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._series: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def ensure(self, labels: tuple[str, str, str], threshold: float | None) -> None:
        with self._lock:
            if labels not in self._series:
                edges = np.asarray(score_buckets(threshold), dtype=np.float64)
                self._series[labels] = (edges, np.zeros(len(edges) + 1, dtype=np.int64), [0.0])

    def observe_many(self, labels: tuple[str, str, str], values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        with self._lock:
            edges, counts, total = self._series[labels]
            counts += np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(counts))
            total[0] += float(values.sum())

    def keep(self, wanted: set[tuple[str, str, str]]) -> None:
        with self._lock:
            for labels in set(self._series) - wanted:
                del self._series[labels]

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.LABELS)
        with self._lock:
            series = [
                (labels, edges, np.cumsum(counts), total[0]) for labels, (edges, counts, total) in self._series.items()
            ]
        for labels, edges, cumulative, total in series:
            buckets = [(repr(float(e)), float(c)) for e, c in zip(edges, cumulative[:-1], strict=True)]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(labels), buckets, total)
        yield family

    def describe(self) -> Iterable[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.LABELS)


class DetectorMetrics:
    """Series per detector, version and role ("serving" answers, "shadow" is scored for comparison only).

    Bounded by the repository (detector.max_detectors, at most two versions each): a version's series go
    when it stops serving or shadowing.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["detector", "version", "role"]
        self.instances = Counter(
            "adae_detector_instances", "Instances scored, per detector version and role.", labels, registry=registry
        )
        self.flagged = Counter(
            "adae_detector_flagged",
            "Instances whose score exceeded that version's threshold, per detector version and role.",
            labels,
            registry=registry,
        )
        self.score = LabelledNumpyHistogram(
            "adae_detector_score", "Adversarial scores per detector version and role (KL divergence, nats).", registry
        )
        self.threshold = Gauge("adae_detector_threshold", "Each loaded version's threshold.", labels, registry=registry)
        # which detector answers: content ids (detector/identity.py), so a dashboard shows when it changed
        self.info = Gauge(
            "adae_detector_info",
            "The detectors loaded, with their content ids (value 1).",
            [*labels, "detector_id", "classifier_id"],
            registry=registry,
        )
        self.agreements = Counter(
            "adae_shadow_agreement",
            "Instances scored by both the serving and the shadow version, by each one's flag.",
            ["detector", "serving", "shadow"],
            registry=registry,
        )
        self.load_failures = Counter(
            "adae_detector_load_failures",
            "Detector versions that failed to load (the serving version stayed).",
            ["detector"],
            registry=registry,
        )
        self._live: set[tuple[str, str, str]] = set()
        self._info_labels: set[tuple[str, ...]] = set()

    def observe(self, detector: str, version: int, role: str, scores: np.ndarray, flags: np.ndarray) -> None:
        if len(scores) == 0:
            return
        labels = (detector, str(version), role)
        self.instances.labels(*labels).inc(len(scores))
        self.flagged.labels(*labels).inc(int(np.count_nonzero(flags)))
        self.score.observe_many(labels, scores)

    def agreement(self, detector: str, serving: np.ndarray, shadow: np.ndarray) -> None:
        serving, shadow = np.asarray(serving, bool), np.asarray(shadow, bool)
        for s_flag, s_name in ((True, "flagged"), (False, "unflagged")):
            for c_flag, c_name in ((True, "flagged"), (False, "unflagged")):
                n = int(np.count_nonzero((serving == s_flag) & (shadow == c_flag)))
                if n:
                    self.agreements.labels(detector, s_name, c_name).inc(n)

    def serve(self, detectors: Mapping[str, ServingDetector]) -> None:
        """The set that serves now: series of versions that left go, the new ones start at zero."""
        live: set[tuple[str, str, str]] = set()
        info_labels: set[tuple[str, ...]] = set()
        for name, det in detectors.items():
            roles = [("serving", det.version, det.scorer)]
            if det.shadow is not None and det.shadow_version is not None:
                roles.append(("shadow", det.shadow_version, det.shadow))
            for role, version, scorer in roles:
                labels = (name, str(version), role)
                live.add(labels)
                info = scorer.info
                self.score.ensure(labels, info.threshold)
                self.instances.labels(*labels)
                self.flagged.labels(*labels)
                self.threshold.labels(*labels).set(info.threshold)
                full: tuple[str, ...] = (*labels, info.detector_id, info.classifier_id)
                info_labels.add(full)
                self.info.labels(*full).set(1)
            for serving_flag in ("flagged", "unflagged"):
                for shadow_flag in ("flagged", "unflagged"):
                    if det.shadow is not None:
                        self.agreements.labels(name, serving_flag, shadow_flag)
        for labels in self._live - live:
            for metric in (self.instances, self.flagged, self.threshold):
                _forget(metric, labels)
        for full in self._info_labels - info_labels:
            _forget(self.info, full)
        self.score.keep(live)
        self._live, self._info_labels = live, info_labels


def _forget(metric: Counter | Gauge, labels: tuple[str, ...]) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass


class ScoreWindow:
    """Ring buffer of the last N scores and flags."""

    def __init__(self, size: int) -> None:
        self.scores = np.zeros(size, dtype=np.float32)
        self.flags = np.zeros(size, dtype=bool)
        self.size = size
        self.pos = 0
        self.filled = 0
        self._lock = threading.Lock()

    def add(self, scores: np.ndarray, flags: np.ndarray) -> None:
        scores, flags = scores[-self.size :], flags[-self.size :]
        n = len(scores)
        with self._lock:
            idx = (self.pos + np.arange(n)) % self.size
            self.scores[idx] = scores
            self.flags[idx] = flags
            self.pos = (self.pos + n) % self.size
            self.filled = min(self.size, self.filled + n)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self.scores[: self.filled].copy() if self.filled < self.size else self.scores.copy(), (
                self.flags[: self.filled].copy() if self.filled < self.size else self.flags.copy()
            )

    def flag_rate(self) -> float:
        with self._lock:
            return float(self.flags[: self.filled].mean()) if self.filled else 0.0


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
        self.lag = Gauge(
            "adae_consumer_lag",
            "Records behind the partition's high watermark (uncommitted).",
            ["topic", "partition"],
            registry=registry,
        )
        self.kafka_up = Gauge("adae_kafka_up", "1 while the Kafka clients are connected, else 0.", registry=registry)
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
        # the feedback loop: live accuracy of each defense and the flag's precision / recall, from labels
        self.feedback_records = Counter(
            "adae_feedback_records", "Feedback records, by what became of them.", ["result"], registry=registry
        )
        self.feedback_instances = Counter(
            "adae_feedback_instances", "Labelled instances joined with their answers.", registry=registry
        )
        self.feedback_correct = Counter(
            "adae_feedback_correct",
            "Joined instances whose prediction equals the label.",
            ["prediction"],
            registry=registry,
        )
        self.feedback_flag = Counter(
            "adae_feedback_flag_instances",
            "Joined instances by flag and by whether the undefended prediction was right.",
            ["flag", "undefended"],
            registry=registry,
        )
        self.feedback_join_answers = Gauge(
            "adae_feedback_join_answers", "Answers held for joining with feedback.", registry=registry
        )
        self.feedback_join_instances = Gauge(
            "adae_feedback_join_instances", "Instances held for joining (memory bound).", registry=registry
        )
        self.feedback_last = Gauge(
            "adae_feedback_last_joined_timestamp_seconds", "When a label last joined an answer.", registry=registry
        )
        self.flagged_captured = Counter(
            "adae_flagged_captured",
            "Requests with flagged instances, by capture outcome.",
            ["result"],
            registry=registry,
        )
        for result in FEEDBACK_RESULTS:
            self.feedback_records.labels(result)
        for prediction in PREDICTIONS:
            self.feedback_correct.labels(prediction)
        for flag in ("flagged", "unflagged"):
            for undefended in ("wrong", "correct"):
                self.feedback_flag.labels(flag, undefended)
        for result in ("sent", "sampled_out", "rejected"):
            self.flagged_captured.labels(result)
        self.detectors = DetectorMetrics(registry)
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

    def set_kafka_up(self, up: bool) -> None:
        self.kafka_up.set(1 if up else 0)

    def feedback_outcome(self, outcome: Outcome) -> None:
        self.feedback_records.labels(outcome.result).inc()
        if outcome.instances:
            self.feedback_instances.inc(outcome.instances)
            for prediction, n in outcome.correct.items():
                self.feedback_correct.labels(prediction).inc(n)
            for (flag, undefended), n in outcome.confusion.items():
                self.feedback_flag.labels(flag, undefended).inc(n)
            self.feedback_last.set_to_current_time()

    def set_feedback_state(self, answers: int, instances: int) -> None:
        self.feedback_join_answers.set(answers)
        self.feedback_join_instances.set(instances)

    def flagged_capture(self, result: str) -> None:
        self.flagged_captured.labels(result).inc()

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
