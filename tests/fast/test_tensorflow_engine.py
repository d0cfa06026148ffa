"""The TensorFlow engine's call path (adae_stream/detector/engines/tensorflow_engine.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the TensorFlow engine")


def test_tensorflow_scores_through_the_flat_entry_when_it_agrees(monkeypatch):
    """The TF engine calls each bucket's concrete function through its private flat entry where this TensorFlow
    has one that answers as the public call does, and through the public call otherwise."""
    import tensorflow as tf

    from adae_stream.detector.engines import tensorflow_engine as engine

    assert engine._flat_entry_agrees()  # the pinned TensorFlow has it, and it agrees
    shift = tf.Variable(1.0, dtype=tf.float32, trainable=False)
    concrete = tf.function(lambda x: (2.0 * x, x + shift)).get_concrete_function(tf.TensorSpec((2, 3), tf.float32))
    call = engine._flat_call(concrete)
    assert call is not concrete
    x = tf.convert_to_tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    for a, b in zip(call(x), concrete(x), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    class NoFlatEntry:
        def __call__(self, x):
            return concrete(x)

    assert isinstance(engine._flat_call(NoFlatEntry()), NoFlatEntry)
    monkeypatch.setattr(engine, "_flat_entry_agrees", lambda: False)  # a TensorFlow whose flat entry differs
    assert engine._flat_call(concrete) is concrete
