"""The contract between the detector and the stream: what a scorer tells and what a scored batch holds.

The detector side (detector/scorer.py) implements it on the process's Keras backend (TensorFlow, JAX or
PyTorch, each through its engine in detector/engines/); the stream, the metrics and the runner use nothing
else of the detector. This module imports neither a Keras backend nor Kafka, so tests,
benchmarks and other runtimes can offer a scorer of their own by satisfying ``StreamScorer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

# Batches are zero-padded up to one of these sizes, each traced once. 64 and 192 keep padding under a
# third above 32: a CIFAR npy run went from 0.72x to 0.80x the floor. Offline scoring of whole arrays
# (AdversarialAE.score / predict) chunks at the largest; the stream's default stops at its batch cap.
BUCKET_SIZES: tuple[int, ...] = (1, 8, 32, 64, 128, 192, 256, 512, 1024)


def buckets_up_to(max_batch_size: int) -> list[int]:
    """The standard buckets a batch of at most ``max_batch_size`` instances can need."""
    return [b for b in BUCKET_SIZES if b <= max_batch_size] or [max_batch_size]


# The arrays a scorer returns for a batch of n instances, each of length n, and their dtypes.
INSTANCE_SCORE = "instance_score"  # S(x), the KL divergence in nats
IS_ADVERSARIAL = "is_adversarial"  # S(x) > threshold
CORRECTED = "corrected"  # argmax M(AE(x)) where flagged, else argmax M(x)
NO_DEFENSE = "no_defense"  # argmax M(x)
DEFENSE = "defense"  # argmax M(AE(x)), flagged or not
# What an answer publishes, first among its fields: the corrected or the undefended prediction, as the
# repository's policy.yaml chooses per detector (``publish``); not a scorer result, the stream picks it.
PREDICTION = "prediction"
PUBLISHABLE = (CORRECTED, NO_DEFENSE)
RESULT_DTYPES: Mapping[str, type[np.generic]] = {
    CORRECTED: np.int64,
    IS_ADVERSARIAL: np.bool_,
    INSTANCE_SCORE: np.float32,
    NO_DEFENSE: np.int64,
    DEFENSE: np.int64,
}


def answer_fields(instance_score: bool, all_predictions: bool) -> tuple[str, ...]:
    """The result arrays each answer carries, in order (detector.return_instance_score and
    detector.return_all_predictions)."""
    fields = [PREDICTION, CORRECTED, IS_ADVERSARIAL]
    if instance_score:
        fields.append(INSTANCE_SCORE)
    if all_predictions:
        fields += [NO_DEFENSE, DEFENSE]
    return tuple(fields)


@dataclass(frozen=True)
class ScorerInfo:
    """What the stream, the answers and the metrics need to know about the detector behind a scorer."""

    input_shape: tuple[int, ...]  # one instance, without the batch axis
    threshold: float
    n_classes: int
    version: str  # the adae-stream version that saved the detector
    detector_id: str  # content ids (detector/identity.py), returned in every answer
    classifier_id: str
    runtime: str = ""  # what computes the scores and its version, e.g. "tensorflow 2.20.0" (build info)
    # clean scores kept at threshold time: the drift metric's reference (None: no drift metric)
    reference_scores: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def identity(self) -> dict[str, str]:
        return {"detector_id": self.detector_id, "classifier_id": self.classifier_id}


class StreamScorer(Protocol):
    """The stream's whole view of a detector."""

    @property
    def info(self) -> ScorerInfo: ...

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Score a batch (n, *info.input_shape) of float32: every key of RESULT_DTYPES, each of length n.
        May raise; the pipeline then dead-letters the batch's requests with reason `scoring`."""
        ...

    def warmup(self, up_to: int | None = None) -> None:
        """Pay every one-off cost (tracing, compilation) for batches of up to ``up_to`` instances now,
        before the first live batch."""
        ...


@dataclass(frozen=True)
class ServingDetector:
    """One detector of a repository as the stream serves it: the version that answers, and optionally a
    shadow version scored on the same instances whose results reach only the metrics."""

    name: str
    version: int
    scorer: StreamScorer
    shadow_version: int | None = None
    shadow: StreamScorer | None = None
    publish: str = CORRECTED  # which prediction answers carry as PREDICTION: one of PUBLISHABLE


@runtime_checkable
class DetectorSource(Protocol):
    """Where the stream's detectors come from: fixed at start, or a repository that changes live.

    ``current()`` is what serves at start; ``changed()`` returns the whole new set when it differs from the
    last one returned (loaded and warmed up already, off the loop), else None. The loop asks between batches.
    """

    def current(self) -> Mapping[str, ServingDetector]: ...

    def changed(self) -> Mapping[str, ServingDetector] | None: ...


class FixedDetector:
    """A single detector (``detector.path``) that serves every record, for the life of the process."""

    def __init__(self, name: str, scorer: StreamScorer) -> None:
        self._detectors = {name: ServingDetector(name, 1, scorer)}
        self.default = name

    def current(self) -> Mapping[str, ServingDetector]:
        return self._detectors

    def changed(self) -> Mapping[str, ServingDetector] | None:
        return None


def as_source(detectors: StreamScorer | DetectorSource, name: str) -> DetectorSource:
    """A single scorer becomes a source of one detector, named ``name``, that serves every record."""
    return detectors if isinstance(detectors, DetectorSource) else FixedDetector(name, detectors)
