"""Two-sample Kolmogorov-Smirnov in numpy: the drift signal between recent and reference scores."""

from __future__ import annotations

import math
import threading

import numpy as np


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """sup_x |F_a(x) - F_b(x)| over the pooled sample."""
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    pooled = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, pooled, side="right") / len(a)
    cdf_b = np.searchsorted(b, pooled, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def kolmogorov_sf(lam: float, terms: int = 100) -> float:
    """P(K > lam) for the Kolmogorov distribution: 2 sum_k (-1)^(k-1) exp(-2 k^2 lam^2)."""
    if lam <= 0:
        return 1.0
    if lam < 0.2:  # the alternating series converges slowly here, and the value is 1 to double precision
        return 1.0
    total = 0.0
    for k in range(1, terms + 1):
        term = math.exp(-2.0 * k * k * lam * lam)
        total += term if k % 2 else -term
        if term < 1e-16:
            break
    return float(min(1.0, max(0.0, 2.0 * total)))


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(D, asymptotic p-value), as scipy.stats.ks_2samp(..., method='asymp') would compute with kstwobign."""
    d = ks_statistic(a, b)
    if math.isnan(d):
        return d, float("nan")
    n, m = len(a), len(b)
    en = n * m / (n + m)
    return d, kolmogorov_sf(math.sqrt(en) * d)


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
