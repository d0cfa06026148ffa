"""Thresholds calibrated to a target false-positive rate on held-out clean data.

A percentile of the training scores is optimistic: the AE fits its training data, so clean traffic it
has not seen scores higher (measured with alibi-detect 0.13.0's semantics on sklearn digits: a 95th
percentile of training scores flagged 8-16 % of held-out clean instances). Calibration therefore
uses clean instances the AE did not train on. With m held-out scores, the threshold leaves
k = floor(rate * m) of them above it; the rate to expect on new clean data is k / m, and its one-sided
Clopper-Pearson upper bound at ``confidence`` says how far above that the true rate may lie.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from adae_stream.errors import CalibrationError

MIN_EXPECTED_FLAGS = 10  # held-out instances above the threshold needed for a usable rate estimate


@dataclass(frozen=True)
class Calibration:
    target_fpr: float
    threshold: float
    held_out: int  # clean instances the AE did not train on
    flagged_held_out: int  # of those, above the threshold
    expected_fpr: float  # flagged_held_out / held_out
    fpr_upper_bound: float  # one-sided Clopper-Pearson upper bound on the true rate
    confidence: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def min_held_out(target_fpr: float) -> int:
    """The smallest held-out set that leaves MIN_EXPECTED_FLAGS instances above the threshold."""
    return math.ceil(MIN_EXPECTED_FLAGS / target_fpr)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (stable for n in the millions)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """The largest rate p still consistent with seeing at most k events in n: P(X <= k; n, p) = 1 - confidence."""
    if n <= 0:
        raise ValueError("n must be positive")
    if k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(100):  # bisection: the CDF falls as p rises
        mid = (lo + hi) / 2
        if binomial_cdf(k, n, mid) > 1.0 - confidence:
            lo = mid
        else:
            hi = mid
    return hi


def calibrate(scores: np.ndarray, target_fpr: float, confidence: float = 0.95) -> Calibration:
    """The threshold for ``target_fpr`` on held-out clean ``scores`` (flagged means score > threshold)."""
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    scores = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    m = len(scores)
    need = min_held_out(target_fpr)
    if m < need:
        raise CalibrationError(
            f"a target false-positive rate of {target_fpr:g} needs at least {need} held-out clean instances "
            f"({MIN_EXPECTED_FLAGS} expected above the threshold); got {m}. Hold out more clean data "
            "(a larger validation split) or ask for a higher rate."
        )
    k = math.floor(target_fpr * m)
    threshold = float(scores[m - k - 1])
    flagged = int((scores > threshold).sum())  # ties at the threshold are not flagged: at most k
    return Calibration(
        target_fpr, threshold, m, flagged, flagged / m, clopper_pearson_upper(flagged, m, confidence), confidence
    )


MAX_REFERENCE_SCORES = 5000


def reference_sample(scores: np.ndarray) -> np.ndarray:
    """A sample of clean scores (sorted float32, at most MAX_REFERENCE_SCORES), kept with the detector as
    the reference of the stream's drift signal."""
    if len(scores) > MAX_REFERENCE_SCORES:
        scores = np.random.default_rng(0).choice(scores, MAX_REFERENCE_SCORES, replace=False)
    return np.sort(scores.astype(np.float32))
