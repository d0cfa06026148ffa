"""Scoring precision: compute copies of the classifier and AE under a Keras mixed-precision policy.

Why copies and not a global policy: training stays float32 (the AE's weights, the optimizer and the
loss are untouched), and only the scoring graph computes in bfloat16/float16. The copies keep
variables of their own, refreshed from the float32 originals with ``sync`` (an assignment, so the
compiled scoring graphs that read them need no retrace).

Why it is a property of the detector and not of the deployment: scores move (median 2.9 % on the
trained digits detector, and flags near the threshold with them: benchmarks/RESULTS.md), so the
threshold must be inferred in the precision that serves it. It is saved with the detector for the
same reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Keras-free at import: the CLI reads PRECISIONS for its --help
    import keras

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


def _with_policy_name(node: Any, policy: str) -> Any:
    """The config tree with every DTypePolicy renamed to `policy` (nested models included)."""
    if isinstance(node, dict):
        if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
            return {**node, "config": {**node["config"], "name": policy}}
        return {k: _with_policy_name(v, policy) for k, v in node.items()}
    if isinstance(node, list):
        return [_with_policy_name(v, policy) for v in node]
    return node


def _leaves(model: keras.Model):
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None):
            yield from _leaves(layer)
        else:
            yield layer


def compute_copy(model: keras.Model, precision: str, float32_output: bool = True) -> keras.Model:
    """A copy of `model` whose layers compute in `precision`, with the same weights.

    float32_output keeps the output layers in float32 (for the classifier, whose probabilities feed
    the KL); the AE's output goes straight into the classifier's first layer, which rounds it to
    `precision` anyway.
    """
    check_precision(precision)
    if precision == "float32":
        return model
    import keras

    from adae_stream.detector.keras_compat import custom_objects

    if not isinstance(model, keras.Model):
        raise ValueError(
            f"precision={precision!r} needs a Keras classifier (a PyTorch classifier computes in the dtype it "
            "was exported in); use precision='float32'"
        )
    try:
        with keras.utils.custom_object_scope(custom_objects()):
            copy = model.__class__.from_config(_with_policy_name(model.get_config(), precision))
        if not copy.built:
            copy.build(model.input_shape)
        copy.set_weights(model.get_weights())
    except Exception as exc:  # subclassed models without get_config/from_config, custom layers, ...
        raise ValueError(
            f"precision={precision!r} rebuilds {model.name!r} from its config, which failed "
            f"({type(exc).__name__}: {exc}); use precision='float32' for this model"
        ) from exc
    leaves = list(_leaves(copy))
    weighted = [i for i, layer in enumerate(leaves) if layer.weights]
    # Keras' own rule for mixed precision: the output layers compute in float32. Softmax outputs
    # rounded to bfloat16's 8 bits make KL(p||q) of a well-trained AE mostly rounding noise
    # (median score error 27 % on digits, 3 % with float32 outputs).
    output_from = weighted[-1] if weighted and float32_output else len(leaves)
    for layer in leaves[output_from:]:
        layer.dtype_policy = "float32"
    stale = [layer.name for layer in leaves[:output_from] if layer.weights and layer.dtype_policy.name != precision]
    if stale:
        raise ValueError(f"precision={precision!r} could not be applied to layers {stale} of {model.name!r}")
    copy.trainable = False
    return copy


def sync(copy: keras.Model, original: keras.Model) -> None:
    """Refresh a compute copy's weights from the float32 original (no-op when they are the same model)."""
    if copy is not original:
        copy.set_weights(original.get_weights())
