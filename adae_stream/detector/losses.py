"""KL divergence, the adversarial training loss and the fused score, written once in keras.ops.

Written once so that every backend (TensorFlow, JAX, PyTorch) trains and scores the same arithmetic;
the engines only compile it. Both follow alibi-detect 0.13.0 exactly (clip to [1e-7, 1], temperature
on the original's prediction only) so that thresholds and scores transfer between the implementations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from keras import ops

EPSILON = 1e-7


def kld(p: Any, q: Any) -> Any:
    """Per-instance KL(p || q) over the last axis, both clipped to [1e-7, 1] like Keras' KLD."""
    p = ops.clip(p, EPSILON, 1.0)
    q = ops.clip(q, EPSILON, 1.0)
    return ops.sum(p * ops.log(p / q), axis=-1)


def temperature_scale(p: Any, temperature: float) -> Any:
    """p**(1/T) renormalised; T < 1 sharpens. A no-op (no ops) for T == 1."""
    if temperature == 1.0:
        return p
    p = ops.power(p, 1.0 / temperature)
    return p / ops.sum(p, axis=-1, keepdims=True)


def loss_adv_ae(
    x_true: Any,
    x_pred: Any,
    model: Any,
    model_hl: Sequence[Any] | None = None,
    w_model: float = 1.0,
    w_recon: float = 0.0,
    w_model_hl: Sequence[float] | None = None,
    temperature: float = 1.0,
) -> Any:
    """w_model * (mean KL(p||q) + sum_i w_i mean KL_i) + w_recon * std(KL)/(std(E)+1e-10) * mean(E).

    The reconstruction term is rescaled by the batch spread of the KL term so that w_recon is
    comparable across data sets (the reference's choice, kept for faithfulness).
    """
    y_true = temperature_scale(model(x_true, training=False), temperature)
    y_pred = model(x_pred, training=False)
    loss_kld = kld(y_true, y_pred)
    loss = ops.mean(loss_kld)
    if model_hl:
        weights = w_model_hl if w_model_hl is not None else [1.0] * len(model_hl)
        for m, w in zip(model_hl, weights, strict=True):
            loss = loss + float(w) * ops.mean(kld(m(x_true, training=False), m(x_pred, training=False)))
    loss = loss * float(w_model)
    if w_recon > 0.0:
        err = ops.square(ops.cast(x_true, loss.dtype) - ops.cast(x_pred, loss.dtype))
        w_scale = ops.std(loss_kld) / (ops.std(err) + 1e-10)
        loss = loss + float(w_recon) * w_scale * ops.mean(err)
    return loss


def fused_score_graph(
    model: Any, ae: Any, model_hl: Sequence[Any], w_model_hl: Sequence[float], temperature: float
) -> Callable[[Any, Any, bool], tuple[Any, ...]]:
    """One function computing everything a request needs: M(x), AE(x), M(AE(x)), the KL terms, the
    flags and the corrected labels, packed into one (n, 5) float32 array (a single device-to-host copy
    per batch; labels < 2**24 are exact in float32)."""
    hl = list(model_hl)
    weights = [float(w) for w in w_model_hl]

    def graph(x: Any, threshold: Any, with_probs: bool) -> tuple[Any, ...]:
        # model and ae may compute in a mixed precision: the KL, flags and labels are float32 throughout
        x_recon = ae(x, training=False)
        p = temperature_scale(ops.cast(model(x, training=False), "float32"), temperature)
        q = ops.cast(model(x_recon, training=False), "float32")
        score = kld(p, q)
        x_recon = ops.cast(x_recon, "float32")
        for m, w in zip(hl, weights, strict=True):
            score = score + w * kld(m(x, training=False), m(x_recon, training=False))
        flags = score > ops.cast(threshold, "float32")
        no_defense = ops.argmax(p, axis=-1)
        defense = ops.argmax(q, axis=-1)
        corrected = ops.where(flags, defense, no_defense)
        packed = ops.stack(
            [ops.cast(v, "float32") for v in (score, flags, corrected, no_defense, defense)],
            axis=1,
        )
        return (packed, p, q) if with_probs else (packed,)

    return graph
