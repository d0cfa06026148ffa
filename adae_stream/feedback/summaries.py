"""Batch summaries: what the fleet's change detectors need of each scored batch, on ``monitoring.summary_topic``.

The counts of each scored batch, per detector version and role (serving or shadow): the instances, how many
were flagged, how many scored above the version's reference upper quartile and below its lower quartile (the
score's shape), and the undefended prediction's class counts (the class mix). Counts are all a Bernoulli
CUSUM needs, so one reader of this topic (changes/service.py) watches the fleet's total traffic and keeps one
false-alarm rate for the fleet. A replica folds the batches of one commit into one record per version and
role (SummaryFold) and sends it just before the commit: under exactly_once in the transaction of those
batches' answers, so a batch redone after an abort is counted once (read_committed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

QUARTILES = (0.25, 0.75)  # of the version's reference scores: the score-shape events "low" and "high"


@dataclass
class Summary:
    detector: str
    version: str
    role: str
    t: float  # when the batch was scored (seconds since the epoch)
    n: int
    flagged: int
    high: int | None = None  # None: the version has no reference scores
    low: int | None = None
    classes: dict[str, int] = field(default_factory=dict)  # undefended predicted class -> instances

    def events(self) -> dict[str, int]:
        """Each event's count, named "stream/event": the charts' inputs."""
        out = {"flags/flagged": self.flagged}
        if self.high is not None and self.low is not None:
            out["score/high"] = self.high
            out["score/low"] = self.low
        for label, count in self.classes.items():
            out[f"classes/{label}"] = count
        return out


def reference_edges(reference: np.ndarray | None) -> tuple[float, float] | None:
    """The lower and upper quartile of a version's reference scores (None without them)."""
    if reference is None or len(reference) < 4:
        return None
    low, high = np.quantile(np.asarray(reference, np.float64), QUARTILES)
    return float(low), float(high)


def summarize(
    detector: str,
    version: int | str,
    role: str,
    t: float,
    scores: np.ndarray,
    flags: np.ndarray,
    classes: np.ndarray,
    edges: tuple[float, float] | None,
) -> Summary:
    scores = np.asarray(scores)
    labels, counts = np.unique(np.asarray(classes).reshape(-1), return_counts=True)
    high = low = None
    if edges is not None:
        low, high = int(np.count_nonzero(scores < edges[0])), int(np.count_nonzero(scores > edges[1]))
    return Summary(
        detector,
        str(version),
        role,
        t,
        int(scores.shape[0]),
        int(np.count_nonzero(flags)),
        high,
        low,
        {str(label): int(c) for label, c in zip(labels.tolist(), counts.tolist(), strict=True)},
    )


def merge(a: Summary, b: Summary) -> Summary:
    """The counts of two summaries of one detector version and role, as one (``t``: the earlier's)."""
    classes = dict(a.classes)
    for label, count in b.classes.items():
        classes[label] = classes.get(label, 0) + count
    high = None if a.high is None or b.high is None else a.high + b.high
    low = None if a.low is None or b.low is None else a.low + b.low
    return Summary(a.detector, a.version, a.role, min(a.t, b.t), a.n + b.n, a.flagged + b.flagged, high, low, classes)


Source = TypeVar("Source")


class SummaryFold(Generic[Source]):
    """The summaries of the batches since the last commit, one per detector version and role.

    One record per batch doubled a lone request's produce requests, and with one request in flight per
    connection an answer waited behind the summary before it: answer p99 at 40-2,000 requests/s was
    27-196 ms with a summary per batch, 16-37 ms without (benchmarks/RESULTS.md, "Latency at every load").
    Each held summary keeps the record of its last batch (``source``: what the copy is sent beside)."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str, str], tuple[Summary, Source]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def add(self, summary: Summary, source: Source) -> None:
        key = (summary.detector, summary.version, summary.role)
        held = self._held.get(key)
        self._held[key] = (summary if held is None else merge(held[0], summary), source)

    def take(self) -> list[tuple[Summary, Source]]:
        """Everything held, in the order first added; the fold is empty after."""
        out, self._held = list(self._held.values()), {}
        return out

    def clear(self) -> None:
        """Forget what is held: its batches were aborted with their transaction and are scored again."""
        self._held = {}


def encode_summary(summary: Summary) -> bytes:
    return json.dumps(summary.__dict__, separators=(",", ":")).encode()


def decode_summary(value: bytes | None) -> Summary:
    """A summary, or ValueError naming what is wrong (the reader skips and counts it)."""
    if value is None:
        raise ValueError("no value")
    try:
        d = json.loads(value)
        s = Summary(
            str(d["detector"]),
            str(d["version"]),
            str(d["role"]),
            float(d["t"]),
            int(d["n"]),
            int(d["flagged"]),
            None if d.get("high") is None else int(d["high"]),
            None if d.get("low") is None else int(d["low"]),
            {str(k): int(v) for k, v in (d.get("classes") or {}).items()},
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a batch summary: {type(exc).__name__}: {exc}") from None
    counts = [s.flagged, *(c for c in (s.high, s.low) if c is not None), *s.classes.values()]
    if s.n < 0 or any(c < 0 or c > s.n for c in counts) or not np.isfinite(s.t):
        raise ValueError(f"not a batch summary: counts outside 0..n={s.n} or a bad time")
    return s
