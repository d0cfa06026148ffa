"""The metrics contract, in one place: what the stream reports (``Metrics``, which
adae_stream.monitoring.metrics.PipelineMetrics implements and every reporter in stream/ takes), and
NullMetrics, which lets the loop report without branching on whether metrics are enabled. monitoring/
implements this module; it imports nothing else of stream/."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from adae_stream.feedback.outcome import Outcome
from adae_stream.scoring import ServingDetector


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
    def set_feedback_state(self, answers: int, instances: int, pending: int) -> None: ...
    def flagged_capture(self, result: str) -> None: ...
    def shadow_published(self, result: str) -> None: ...
    def summary_published(self, result: str) -> None: ...
    def transaction_committed(self) -> None: ...
    def observe_detector(
        self, detector: str, version: int, role: str, scores: np.ndarray, flags: np.ndarray
    ) -> None: ...
    def shadow_agreement(self, detector: str, serving: np.ndarray, shadow: np.ndarray) -> None: ...
    def set_detectors(self, detectors: Mapping[str, ServingDetector]) -> None: ...


class NullMetrics:
    """No-op metrics."""

    def observe_batch(self, n: int, seconds: float) -> None:
        pass

    def observe_results(
        self, scores: np.ndarray, flags: np.ndarray, corrected: np.ndarray, no_defense: np.ndarray
    ) -> None:
        pass

    def request_done(self, status: str, reason: str | None = None, end_to_end_s: float | None = None) -> None:
        pass

    def set_lag(self, topic: str, partition: int, lag: int | None) -> None:
        pass

    def set_kafka_up(self, up: bool) -> None:
        pass

    def feedback_outcome(self, outcome: Outcome) -> None:
        pass

    def set_feedback_state(self, answers: int, instances: int, pending: int) -> None:
        pass

    def flagged_capture(self, result: str) -> None:
        pass

    def shadow_published(self, result: str) -> None:
        pass

    def summary_published(self, result: str) -> None:
        pass

    def transaction_committed(self) -> None:
        pass

    def observe_detector(self, detector: str, version: int, role: str, scores: np.ndarray, flags: np.ndarray) -> None:
        pass

    def shadow_agreement(self, detector: str, serving: np.ndarray, shadow: np.ndarray) -> None:
        pass

    def set_detectors(self, detectors: Mapping[str, ServingDetector]) -> None:
        pass


class Tallied:
    """Metrics that keep the pipeline's own totals on the way through: `ok`, `dead_letter` and the other
    request statuses, `batches`, `instances`, `transactions`. Each count so has one call site (the metric
    it is reported to), and the totals exist whether or not metrics are exported: for the closing log
    line, the tests and the benchmarks. Written from the loop thread and from producer callbacks."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def _add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def request_done(self, status: str, reason: str | None = None, end_to_end_s: float | None = None) -> None:
        self._add(status)
        self._metrics.request_done(status, reason, end_to_end_s)

    def observe_batch(self, n: int, seconds: float) -> None:
        self._add("batches")
        self._add("instances", n)
        self._metrics.observe_batch(n, seconds)

    def transaction_committed(self) -> None:
        self._add("transactions")
        self._metrics.transaction_committed()

    # the rest of the contract goes straight through, one method each, so that mypy checks every one
    def observe_results(
        self, scores: np.ndarray, flags: np.ndarray, corrected: np.ndarray, no_defense: np.ndarray
    ) -> None:
        self._metrics.observe_results(scores, flags, corrected, no_defense)

    def set_lag(self, topic: str, partition: int, lag: int | None) -> None:
        self._metrics.set_lag(topic, partition, lag)

    def set_kafka_up(self, up: bool) -> None:
        self._metrics.set_kafka_up(up)

    def feedback_outcome(self, outcome: Outcome) -> None:
        self._metrics.feedback_outcome(outcome)

    def set_feedback_state(self, answers: int, instances: int, pending: int) -> None:
        self._metrics.set_feedback_state(answers, instances, pending)

    def flagged_capture(self, result: str) -> None:
        self._metrics.flagged_capture(result)

    def shadow_published(self, result: str) -> None:
        self._metrics.shadow_published(result)

    def summary_published(self, result: str) -> None:
        self._metrics.summary_published(result)

    def observe_detector(self, detector: str, version: int, role: str, scores: np.ndarray, flags: np.ndarray) -> None:
        self._metrics.observe_detector(detector, version, role, scores, flags)

    def shadow_agreement(self, detector: str, serving: np.ndarray, shadow: np.ndarray) -> None:
        self._metrics.shadow_agreement(detector, serving, shadow)

    def set_detectors(self, detectors: Mapping[str, ServingDetector]) -> None:
        self._metrics.set_detectors(detectors)


# mypy checks here that NullMetrics and Tallied each keep the whole contract (no __getattr__ anywhere, so a
# method missing from either is an error; tests/fast/test_telemetry.py checks that Tallied forwards every one)
_IMPLEMENTS: tuple[Metrics, Metrics] = (NullMetrics(), Tallied(NullMetrics()))
