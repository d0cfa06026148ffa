"""White-box attacks (FGSM, PGD) against the classifier with the backend's input gradients, and common
corruptions.

Image inputs live in [0, 1] and every output is clipped back into it; ``bounds=None`` leaves tabular
features unclipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adae_stream.detector.backend import engine

Bounds = tuple[float, float] | None


def _clip(x: np.ndarray, bounds: Bounds) -> np.ndarray:
    return x if bounds is None else np.clip(x, bounds[0], bounds[1])


def fgsm(model: Any, x: np.ndarray, y: np.ndarray, eps: float = 0.1, bounds: Bounds = (0.0, 1.0)) -> np.ndarray:
    """Fast gradient sign method: one step of size eps along the sign of the loss gradient."""
    x = np.asarray(x, np.float32)
    adv = x + np.float32(eps) * engine().loss_grad_sign(model, x, np.asarray(y))
    return _clip(adv, bounds).astype(np.float32)


def pgd(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    eps: float = 0.1,
    alpha: float = 0.02,
    steps: int = 10,
    seed: int = 0,
    bounds: Bounds = (0.0, 1.0),
) -> np.ndarray:
    """Projected gradient descent in the L-inf ball of radius eps, from a random start."""
    x0 = np.asarray(x, np.float32)
    y = np.asarray(y)
    grad_sign = engine().loss_grad_sign
    rng = np.random.default_rng(seed)
    adv = _clip(x0 + rng.uniform(-eps, eps, size=x.shape).astype(np.float32), bounds)
    for _ in range(steps):
        adv = adv + np.float32(alpha) * grad_sign(model, adv, y)
        adv = _clip(np.clip(adv, x0 - eps, x0 + eps), bounds)
    return adv.astype(np.float32)


def gaussian_noise(x: np.ndarray, sigma: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(x + rng.normal(0.0, sigma, size=x.shape), 0.0, 1.0).astype(np.float32)


def blur(x: np.ndarray, passes: int = 2) -> np.ndarray:
    """Repeated 3x3 box blur over the two spatial axes (edge-padded)."""
    out = x.astype(np.float32)
    height, width = out.shape[1], out.shape[2]
    for _ in range(passes):
        padded = np.pad(out, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        shifted = [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)]
        out = np.mean(shifted, axis=0, dtype=np.float32)
    return out


def occlusion(x: np.ndarray, size: int = 4, seed: int = 0) -> np.ndarray:
    """A random size x size square set to zero in each image."""
    rng = np.random.default_rng(seed)
    out = x.copy()
    h, w = x.shape[1], x.shape[2]
    for i in range(len(out)):
        r, c = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        out[i, r : r + size, c : c + size] = 0.0
    return out
