"""Score histograms fed with whole arrays at once (np.searchsorted), exported like prometheus-client's.

One Python call per instance would cost more than scoring a small batch; these take a batch per call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily


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
