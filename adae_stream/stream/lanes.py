"""One lane per detector: its own batcher, assembler, scorer and answer identity.

Batches never mix detectors (each has its own input shape, threshold and compiled graphs), so each
detector batches apart. A new version takes over a lane at a batch boundary: everything the lane holds
is scored on the version that took it first, so a request split across batches is never answered by two
versions, and nothing is dropped or answered twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from adae_stream.config import BatchingConfig
from adae_stream.scoring import ServingDetector
from adae_stream.stream.batcher import Assembler, Batcher


def answer_identity(detector: ServingDetector) -> dict[str, Any]:
    """What every answer of this detector says about who answered (codecs.tensors.ANSWER_PARAMETERS)."""
    info = detector.scorer.info
    return {
        "model_name": detector.name,
        "model_version": str(detector.version),
        "threshold": float(info.threshold),
        "detector_version": info.version,
        **info.identity,
        "prediction": detector.publish,  # which prediction the PREDICTION field carries
    }


@dataclass
class Lane:
    detector: ServingDetector
    batcher: Batcher
    assembler: Assembler = field(default_factory=Assembler)
    shadow_parts: Assembler = field(default_factory=Assembler)  # the shadow's slices of split requests

    def __post_init__(self) -> None:
        self.answer_info = answer_identity(self.detector)

    @property
    def name(self) -> str:
        return self.detector.name

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.detector.scorer.info.input_shape)

    def take_over(self, detector: ServingDetector) -> None:
        """Called with the lane empty (drained on the old version)."""
        self.detector = detector
        self.answer_info = answer_identity(detector)


class Lanes:
    def __init__(self, batching: BatchingConfig, detectors: Mapping[str, ServingDetector]) -> None:
        self._batching = batching
        self._lanes: dict[str, Lane] = {}
        self.apply(detectors, drain=lambda lane: None)

    def __iter__(self) -> Iterator[Lane]:
        return iter(list(self._lanes.values()))

    def __len__(self) -> int:
        return len(self._lanes)

    def get(self, name: str | None) -> Lane | None:
        return self._lanes.get(name) if name is not None else None

    @property
    def by_name(self) -> Mapping[str, Lane]:
        return self._lanes

    @property
    def pending(self) -> int:
        """Requests read and not yet scored, over every lane."""
        return sum(len(lane.batcher) for lane in self._lanes.values())

    def time_until_due(self) -> float | None:
        due = [d for lane in self._lanes.values() if (d := lane.batcher.time_until_due()) is not None]
        return min(due) if due else None

    def apply(self, detectors: Mapping[str, ServingDetector], drain: Callable[[Lane], None]) -> list[str]:
        """Take a new set of detectors. ``drain(lane)`` scores everything the lane holds on its current
        version; it runs before a lane changes version or goes away. Returns what changed, for the log."""
        changes = []
        for name, lane in list(self._lanes.items()):
            new = detectors.get(name)
            if new is None:
                drain(lane)
                del self._lanes[name]
                changes.append(f"{name}: removed")
            elif (new.scorer, new.version, new.shadow, new.publish) != (
                lane.detector.scorer,
                lane.detector.version,
                lane.detector.shadow,
                lane.detector.publish,
            ):  # a new choice of prediction drains too: a split request is answered under one choice
                drain(lane)
                publishes = "" if new.publish == lane.detector.publish else f", publishes {new.publish}"
                lane.take_over(new)
                changes.append(f"{name}: version {new.version}{publishes}")
            else:
                lane.detector = new
        for name, det in detectors.items():
            if name not in self._lanes:
                batcher = Batcher(self._batching.max_batch_size, self._batching.max_batch_delay_ms / 1000.0)
                self._lanes[name] = Lane(det, batcher)
                changes.append(f"{name}: version {det.version} added")
        return changes
