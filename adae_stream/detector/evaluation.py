"""Detection quality figures shared by the detector card and the demo (numpy only)."""

from __future__ import annotations

import numpy as np


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if len(negative) == 0 or len(positive) == 0:
        return float("nan")
    scores = np.concatenate([negative, positive])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    r_pos = ranks[len(negative) :].sum()
    return float((r_pos - len(positive) * (len(positive) + 1) / 2) / (len(negative) * len(positive)))
