"""KL divergence and the adversarial training loss, written once and shared by training and scoring.

Both follow alibi-detect 0.13.0 exactly (clip to [1e-7, 1], temperature on the original's prediction
only) so that thresholds and scores transfer between the two implementations.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

EPSILON = 1e-7


def kld(p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
    """Per-instance KL(p || q) over the last axis, both clipped to [1e-7, 1] like Keras' KLD."""
    p = tf.clip_by_value(p, EPSILON, 1.0)
    q = tf.clip_by_value(q, EPSILON, 1.0)
    return tf.reduce_sum(p * tf.math.log(p / q), axis=-1)


def temperature_scale(p: tf.Tensor, temperature: float) -> tf.Tensor:
    """p**(1/T) renormalised; T < 1 sharpens. A no-op (no graph ops) for T == 1."""
    if temperature == 1.0:
        return p
    p = p ** (1.0 / temperature)
    return p / tf.reduce_sum(p, axis=-1, keepdims=True)


def loss_adv_ae(
    x_true: tf.Tensor,
    x_pred: tf.Tensor,
    model: tf.keras.Model,
    model_hl: Sequence[tf.keras.Model] | None = None,
    w_model: float = 1.0,
    w_recon: float = 0.0,
    w_model_hl: Sequence[float] | None = None,
    temperature: float = 1.0,
) -> tf.Tensor:
    """w_model * (mean KL(p||q) + sum_i w_i mean KL_i) + w_recon * std(KL)/(std(E)+1e-10) * mean(E).

    The reconstruction term is rescaled by the batch spread of the KL term so that w_recon is
    comparable across data sets (the reference's choice, kept for faithfulness).
    """
    y_true = temperature_scale(model(x_true, training=False), temperature)
    y_pred = model(x_pred, training=False)
    loss_kld = kld(y_true, y_pred)
    loss = tf.reduce_mean(loss_kld)
    if model_hl:
        weights = w_model_hl if w_model_hl is not None else [1.0] * len(model_hl)
        for m, w in zip(model_hl, weights, strict=True):
            h_kld = kld(m(x_true, training=False), m(x_pred, training=False))
            loss += tf.cast(w, loss.dtype) * tf.reduce_mean(h_kld)
    loss *= tf.cast(w_model, loss.dtype)
    if w_recon > 0.0:
        err = tf.square(tf.cast(x_true, loss.dtype) - tf.cast(x_pred, loss.dtype))
        w_scale = tf.math.reduce_std(loss_kld) / (tf.math.reduce_std(err) + 1e-10)
        loss += tf.cast(w_recon, loss.dtype) * w_scale * tf.reduce_mean(err)
    return loss
