"""Series per detector, version and role: what a repository of detectors reports beside the totals.

"serving" is the version that answers, "shadow" one scored on the same instances for comparison only.
Per-instance figures are recorded per batch with numpy, as for the totals (monitoring/metrics.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from adae_stream.feedback.outcome import PREDICTIONS, VersionOutcome
from adae_stream.monitoring.drift import ScoreWindow, ks_2samp
from adae_stream.monitoring.histograms import LabelledNumpyHistogram
from adae_stream.scoring import ServingDetector

Labels = tuple[str, str, str]  # detector, version, role
MAX_FEEDBACK_VERSIONS_PER_DETECTOR = 4  # labels arrive after a swap too: the last few versions keep counting


class DetectorMetrics:
    """Series per detector, version and role ("serving" answers, "shadow" is scored for comparison only).

    Bounded by the repository (detector.max_detectors, at most two versions each live): a version's score
    series go when it stops serving or shadowing. Its feedback series stay a while longer, since labels for
    its answers keep coming after a swap (the last MAX_FEEDBACK_VERSIONS_PER_DETECTOR versions each).
    """

    def __init__(self, registry: CollectorRegistry, window_size: int = 2000) -> None:
        labels = ["detector", "version", "role"]
        self.window_size = window_size
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
        self.flag_rate = Gauge(
            "adae_detector_flag_rate",
            "Fraction flagged over each version's recent score window.",
            labels,
            registry=registry,
        )
        self.drift = Gauge(
            "adae_detector_score_drift",
            "Two-sample KS statistic: each version's recent scores vs its own reference scores.",
            labels,
            registry=registry,
        )
        self.drift_p = Gauge(
            "adae_detector_score_drift_p_value",
            "Asymptotic p-value of each version's KS drift statistic.",
            labels,
            registry=registry,
        )
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
        self.feedback_instances = Counter(
            "adae_detector_feedback_instances",
            "Labelled instances joined with what each version predicted, per role.",
            labels,
            registry=registry,
        )
        self.feedback_correct = Counter(
            "adae_detector_feedback_correct",
            "Joined instances whose prediction equals the label, per detector version, role and prediction.",
            [*labels, "prediction"],
            registry=registry,
        )
        self.feedback_flag = Counter(
            "adae_detector_feedback_flag_instances",
            "Joined instances by each version's flag and by whether the undefended prediction was right.",
            [*labels, "flag", "undefended"],
            registry=registry,
        )
        self._live: dict[Labels, tuple[ScoreWindow, np.ndarray | None]] = {}
        self._info_labels: set[tuple[str, ...]] = set()
        self._feedback_versions: dict[str, OrderedDict[tuple[str, str], None]] = {}
        self._lock = threading.Lock()  # the loop changes the live set, the drift thread reads it

    # ------------------------------------------------------------------ hot path
    def observe(self, detector: str, version: int, role: str, scores: np.ndarray, flags: np.ndarray) -> None:
        if len(scores) == 0:
            return
        labels = (detector, str(version), role)
        self.instances.labels(*labels).inc(len(scores))
        self.flagged.labels(*labels).inc(int(np.count_nonzero(flags)))
        self.score.observe_many(labels, scores)
        live = self._live.get(labels)
        if live is not None:
            live[0].add(np.asarray(scores, np.float32), np.asarray(flags, bool))
            self.flag_rate.labels(*labels).set(live[0].flag_rate())

    def agreement(self, detector: str, serving: np.ndarray, shadow: np.ndarray) -> None:
        serving, shadow = np.asarray(serving, bool), np.asarray(shadow, bool)
        for s_flag, s_name in ((True, "flagged"), (False, "unflagged")):
            for c_flag, c_name in ((True, "flagged"), (False, "unflagged")):
                n = int(np.count_nonzero((serving == s_flag) & (shadow == c_flag)))
                if n:
                    self.agreements.labels(detector, s_name, c_name).inc(n)

    def feedback(self, outcome: VersionOutcome) -> None:
        labels = (outcome.detector, outcome.version, outcome.role)
        self._keep_feedback_series(outcome.detector, outcome.version, outcome.role)
        self.feedback_instances.labels(*labels).inc(outcome.instances)
        for prediction, n in outcome.correct.items():
            self.feedback_correct.labels(*labels, prediction).inc(n)
        for (flag, undefended), n in outcome.confusion.items():
            self.feedback_flag.labels(*labels, flag, undefended).inc(n)

    # ------------------------------------------------------------------ off the hot path
    def serve(self, detectors: Mapping[str, ServingDetector]) -> None:
        """The set that serves now: series of versions that left go, the new ones start at zero."""
        live: dict[Labels, tuple[ScoreWindow, np.ndarray | None]] = {}
        info_labels: set[tuple[str, ...]] = set()
        for name, det in detectors.items():
            roles = [("serving", det.version, det.scorer)]
            if det.shadow is not None and det.shadow_version is not None:
                roles.append(("shadow", det.shadow_version, det.shadow))
                for serving_flag in ("flagged", "unflagged"):
                    for shadow_flag in ("flagged", "unflagged"):
                        self.agreements.labels(name, serving_flag, shadow_flag)
            for role, version, scorer in roles:
                labels = (name, str(version), role)
                info = scorer.info
                reference = info.reference_scores
                live[labels] = self._live.get(labels) or (
                    ScoreWindow(self.window_size),
                    None if reference is None or len(reference) == 0 else np.asarray(reference),
                )
                self.score.ensure(labels, info.threshold)
                self.instances.labels(*labels)
                self.flagged.labels(*labels)
                self.threshold.labels(*labels).set(info.threshold)
                full: tuple[str, ...] = (*labels, info.detector_id, info.classifier_id)
                info_labels.add(full)
                self.info.labels(*full).set(1)
        for labels in set(self._live) - set(live):
            for metric in (self.instances, self.flagged, self.threshold, self.flag_rate, self.drift, self.drift_p):
                _forget(metric, labels)
        for full in self._info_labels - info_labels:
            _forget(self.info, full)
        self.score.keep(set(live))
        with self._lock:
            self._live = live
        self._info_labels = info_labels

    def update_drift(self) -> None:
        with self._lock:
            live = list(self._live.items())
        for labels, (window, reference) in live:
            scores, _ = window.snapshot()
            if reference is not None and len(scores) >= 10:
                statistic, p_value = ks_2samp(scores, reference)
                self.drift.labels(*labels).set(statistic)
                self.drift_p.labels(*labels).set(p_value)

    def _keep_feedback_series(self, detector: str, version: str, role: str) -> None:
        seen = self._feedback_versions.setdefault(detector, OrderedDict())
        seen[(version, role)] = None
        seen.move_to_end((version, role))
        while len(seen) > 2 * MAX_FEEDBACK_VERSIONS_PER_DETECTOR:
            (old_version, old_role), _ = seen.popitem(last=False)
            labels = (detector, old_version, old_role)
            _forget(self.feedback_instances, labels)
            for prediction in PREDICTIONS:
                _forget(self.feedback_correct, (*labels, prediction))
            for flag in ("flagged", "unflagged"):
                for undefended in ("wrong", "correct"):
                    _forget(self.feedback_flag, (*labels, flag, undefended))


def _forget(metric: Counter | Gauge, labels: tuple[str, ...]) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass
