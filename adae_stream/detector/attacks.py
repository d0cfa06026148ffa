"""White-box attacks (FGSM, PGD) against the classifier with TF gradients, and common corruptions.

Image inputs live in [0, 1] and every output is clipped back into it; ``bounds=None`` leaves tabular
features unclipped.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _loss_grad_sign(model: tf.keras.Model, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.keras.losses.sparse_categorical_crossentropy(y, model(x, training=False))
    return tf.sign(tape.gradient(loss, x))


Bounds = tuple[float, float] | None


def _clip(x: tf.Tensor, bounds: Bounds) -> tf.Tensor:
    return x if bounds is None else tf.clip_by_value(x, bounds[0], bounds[1])


def fgsm(
    model: tf.keras.Model, x: np.ndarray, y: np.ndarray, eps: float = 0.1, bounds: Bounds = (0.0, 1.0)
) -> np.ndarray:
    """Fast gradient sign method: one step of size eps along the sign of the loss gradient."""
    xt = tf.convert_to_tensor(x, tf.float32)
    adv = xt + eps * _loss_grad_sign(model, xt, tf.convert_to_tensor(y))
    return _clip(adv, bounds).numpy()


def pgd(
    model: tf.keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    eps: float = 0.1,
    alpha: float = 0.02,
    steps: int = 10,
    seed: int = 0,
    bounds: Bounds = (0.0, 1.0),
) -> np.ndarray:
    """Projected gradient descent in the L-inf ball of radius eps, from a random start."""
    x0 = tf.convert_to_tensor(x, tf.float32)
    yt = tf.convert_to_tensor(y)
    rng = np.random.default_rng(seed)
    adv = _clip(x0 + rng.uniform(-eps, eps, size=x.shape).astype(np.float32), bounds)
    for _ in range(steps):
        adv = adv + alpha * _loss_grad_sign(model, adv, yt)
        adv = _clip(tf.clip_by_value(adv, x0 - eps, x0 + eps), bounds)
    return adv.numpy()


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
