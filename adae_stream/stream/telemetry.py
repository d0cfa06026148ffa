"""What the stream reports, as one protocol: adae_stream.monitoring.metrics.PipelineMetrics implements it,
and NullMetrics (no metrics) lets the loop report without branching on whether metrics are enabled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from adae_stream.scoring import ServingDetector
from adae_stream.stream.feedback import Outcome


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

    def set_feedback_state(self, answers: int, instances: int) -> None:
        pass

    def flagged_capture(self, result: str) -> None:
        pass

    def observe_detector(self, detector: str, version: int, role: str, scores: np.ndarray, flags: np.ndarray) -> None:
        pass

    def shadow_agreement(self, detector: str, serving: np.ndarray, shadow: np.ndarray) -> None:
        pass

    def set_detectors(self, detectors: Mapping[str, ServingDetector]) -> None:
        pass
