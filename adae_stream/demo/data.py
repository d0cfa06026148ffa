"""Offline data: scikit-learn's bundled digits (8x8 grey images), scaled to [0, 1] as (n, 8, 8, 1)."""

from __future__ import annotations

import numpy as np


def load_digits_split(
    seed: int = 0, test_fraction: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    y = y.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(len(X) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]
