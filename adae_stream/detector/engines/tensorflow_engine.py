"""TensorFlow: the default backend. Scores through one concrete ``tf.function`` per bucket with the
threshold in a variable (a new threshold is an assignment, not a retrace); trains with a compiled
GradientTape step (alibi-detect's trainer runs its step eagerly: ours is ~10x faster)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from adae_stream.detector.engines import Loss, ScoreGraph


class _BucketTracesAreIntended(logging.Filter):
    """TF warns after 5 traces of one Python function; one trace per bucket is the design here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "retracing" not in record.getMessage()


tf.get_logger().addFilter(_BucketTracesAreIntended())


class _Compiled:
    def __init__(self, graph: ScoreGraph, jit_compile: bool) -> None:
        self._graph, self._jit = graph, jit_compile
        self._threshold = tf.Variable(np.inf, dtype=tf.float32, trainable=False)

    def set_threshold(self, value: float) -> None:
        self._threshold.assign(value)

    def fn(self, size: int, with_probs: bool, feature_shape: tuple[int, ...]) -> Callable[[np.ndarray], list]:
        graph, thr = self._graph, self._threshold
        traced = tf.function(lambda x: graph(x, thr, with_probs), jit_compile=self._jit)
        # traced exactly once for its fixed shape, then called directly (no per-call signature matching)
        concrete = traced.get_concrete_function(tf.TensorSpec((size, *feature_shape), tf.float32))
        call = _flat_call(concrete)
        return lambda x: [t.numpy() for t in call(tf.convert_to_tensor(x))]


def _flat_call(concrete: Any) -> Callable[[tf.Tensor], Sequence[tf.Tensor]]:
    """The concrete function's flat entry, which skips binding the arguments to its signature on every call:
    a batch-1 tabular call took 162 us through ``concrete(x)`` and 126 us through ``_call_flat`` (TF 2.21,
    2 cores), Python that a lone request waits for. It is private (TF 2.16-2.21 spell it
    ``_call_flat(tensor_inputs, captured_inputs)``), so it is used only where this TensorFlow has it and it
    answers as the public call does (checked once per process on a small function with a captured variable,
    like the scorer's threshold: not per bucket, where a check would cost two more calls of a large model);
    otherwise the public call. tests/fast/test_tensorflow_engine.py checks which one this TensorFlow gets."""
    if _flat_entry_agrees() and hasattr(concrete, "_call_flat") and hasattr(concrete, "captured_inputs"):
        flat, captured = concrete._call_flat, concrete.captured_inputs
        return lambda x: flat([x], captured)
    return concrete


@functools.cache
def _flat_entry_agrees() -> bool:
    offset = tf.Variable(0.5, dtype=tf.float32, trainable=False)
    concrete = tf.function(lambda x: (2.0 * x + offset, x - offset)).get_concrete_function(
        tf.TensorSpec((2, 3), tf.float32)
    )
    x = tf.convert_to_tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    try:
        flat = concrete._call_flat([x], concrete.captured_inputs)
        return all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(flat, concrete(x), strict=True))
    except (TypeError, ValueError, AttributeError):
        return False


class _Steps:
    """The compiled training and evaluation steps of one run (the AE and optimizer slots are built
    first, so the compiled functions create no variables)."""

    def __init__(self, ae: Any, opt: Any, loss: Loss) -> None:
        self._ae = ae

        @tf.function(reduce_retracing=True)
        def evaluate(x: tf.Tensor) -> tf.Tensor:
            return loss(x, ae(x, training=False))

        @tf.function(reduce_retracing=True)
        def train(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                x_pred = ae(x, training=True)
                value = loss(x, x_pred)
                if ae.losses:
                    value += tf.add_n(ae.losses)
            grads = tape.gradient(value, ae.trainable_variables)
            opt.apply_gradients(zip(grads, ae.trainable_variables, strict=True))
            return value, x_pred

        self._evaluate, self._train = evaluate, train

    def train(self, x: np.ndarray) -> tuple[float, Any]:
        value, x_pred = self._train(tf.convert_to_tensor(x, tf.float32))
        return float(value), x_pred

    def evaluate(self, x: np.ndarray) -> float:
        return float(self._evaluate(tf.convert_to_tensor(x, tf.float32)))

    def weights(self) -> list[np.ndarray]:
        return [v.numpy() for v in self._ae.trainable_variables]

    def restore(self, values: Sequence[np.ndarray]) -> None:
        for var, value in zip(self._ae.trainable_variables, values, strict=True):
            var.assign(value)

    def finish(self) -> None:
        pass


class TensorFlowEngine:
    name = "tensorflow"
    alternative_form = "XLA"  # faster per call for Dense models, slower on large conv batches (compile_choice.py)

    def runtime(self) -> str:
        return f"tensorflow {tf.__version__}"

    def devices(self) -> list[str]:
        return [d.name for d in tf.config.list_logical_devices()]

    def compile_score(self, graph: ScoreGraph, jit_compile: bool) -> _Compiled:
        return _Compiled(graph, jit_compile)

    def train_steps(self, ae: Any, optimizer: Any, loss: Loss) -> _Steps:
        return _Steps(ae, optimizer, loss)

    def loss_grad_sign(self, model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xt = tf.convert_to_tensor(x, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.keras.losses.sparse_categorical_crossentropy(tf.convert_to_tensor(y), model(xt, training=False))
        return tf.sign(tape.gradient(loss, xt)).numpy()


ENGINE = TensorFlowEngine()
