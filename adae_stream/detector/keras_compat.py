"""Keras 3 serialisation gaps that every config round trip (saving, loading, precision copies) must fill."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def custom_objects() -> dict[str, Callable[..., Any]]:
    """tf.nn activations that Keras 3 serialises under names only TensorFlow resolves (the seed's own
    examples use tf.nn.softmax, saved as "softmax_v2").

    On TF they map to the same functions (scores bit-identical); on JAX and torch to Keras' own, which
    compute the same function (scores within 4e-7: shared/reference/keras-backends.md), so a detector
    saved under TF loads anywhere without TensorFlow installed."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return {"softmax_v2": tf.nn.softmax, "log_softmax_v2": tf.nn.log_softmax, "swish": tf.nn.swish}
    act = keras.activations
    return {"softmax_v2": act.softmax, "log_softmax_v2": act.log_softmax, "swish": act.silu}
