"""The fused, compiled scoring function: one graph call per batch computes everything a request needs.

Why fused: the reference runs AE(x), M(x), M(AE(x)) as separate eager passes (and correct() runs them
again), copying tensors to numpy between them. Here one tf.function does M(x), AE(x), M(AE(x)), the
KL terms, the flags and the corrected labels. Why buckets: inputs are zero-padded up to one of a few
fixed batch sizes, so each size is traced once and never again, whatever sizes traffic arrives in.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import tensorflow as tf

from adae_stream.detector.losses import kld, temperature_scale
from adae_stream.scoring import (
    BUCKET_SIZES,
    CORRECTED,
    DEFENSE,
    INSTANCE_SCORE,
    IS_ADVERSARIAL,
    NO_DEFENSE,
    ScorerInfo,
)

log = logging.getLogger(__name__)


class _BucketTracesAreIntended(logging.Filter):
    """TF warns after 5 traces of one Python function; one trace per bucket is the design here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("FusedScorer" in record.getMessage() and "retracing" in record.getMessage())


tf.get_logger().addFilter(_BucketTracesAreIntended())


class FusedScorer:
    """Callable ``x -> dict of numpy arrays`` over a detector's models; the stream's only view of TF."""

    def __init__(
        self,
        model: tf.keras.Model,
        ae: tf.keras.Model,
        model_hl: Sequence[tf.keras.Model] | None = None,
        w_model_hl: Sequence[float] | None = None,
        temperature: float = 1.0,
        bucket_sizes: Sequence[int] = BUCKET_SIZES,
        jit_compile: bool = False,
    ) -> None:
        if not bucket_sizes or any(int(b) < 1 for b in bucket_sizes):
            raise ValueError(f"bucket_sizes must be positive integers, got {bucket_sizes!r}")
        self.bucket_sizes = tuple(sorted({int(b) for b in bucket_sizes}))
        hl = list(model_hl or [])
        weights = [float(w) for w in (w_model_hl if w_model_hl is not None else [1.0] * len(hl))]
        temperature = float(temperature)

        def graph(x: tf.Tensor, threshold: tf.Tensor, with_probs: bool):
            # model and ae may compute in a mixed precision: the KL, flags and labels are float32 throughout
            x_recon = ae(x, training=False)
            p = temperature_scale(tf.cast(model(x, training=False), tf.float32), temperature)
            q = tf.cast(model(x_recon, training=False), tf.float32)
            score = kld(p, q)
            x_recon = tf.cast(x_recon, tf.float32)
            for m, w in zip(hl, weights, strict=True):
                score += tf.constant(w, score.dtype) * kld(m(x, training=False), m(x_recon, training=False))
            flags = score > tf.cast(threshold.read_value(), score.dtype)
            no_defense = tf.argmax(p, axis=-1, output_type=tf.int32)
            defense = tf.argmax(q, axis=-1, output_type=tf.int32)
            corrected = tf.where(flags, defense, no_defense)
            # one packed (n, 5) float32 result: a single device-to-host copy per batch (labels < 2**24 are exact)
            packed = tf.stack(
                [
                    tf.cast(score, tf.float32),
                    tf.cast(flags, tf.float32),
                    tf.cast(corrected, tf.float32),
                    tf.cast(no_defense, tf.float32),
                    tf.cast(defense, tf.float32),
                ],
                axis=1,
            )
            return (packed, p, q) if with_probs else packed

        self._graph = graph
        self._jit = jit_compile
        # The threshold lives in a variable read by the graph: calls pass only x, and a new threshold
        # is an assignment, not a retrace.
        self._threshold_var = tf.Variable(np.inf, dtype=tf.float32, trainable=False)
        self._threshold_value = np.inf
        self._lock = threading.Lock()  # threshold assignment + graph call must not interleave across threads
        # One concrete function per (bucket, with_probs): traced exactly once for its fixed shape, and
        # called directly (no per-call signature matching).
        self._fns: dict[tuple[int, bool], Callable] = {}

    def _fn(self, size: int, with_probs: bool, feature_shape: tuple[int, ...]) -> Callable:
        key = (size, with_probs)
        if key not in self._fns:
            graph, thr = self._graph, self._threshold_var
            fn = tf.function(lambda x: graph(x, thr, with_probs), jit_compile=self._jit)
            self._fns[key] = fn.get_concrete_function(tf.TensorSpec((size, *feature_shape), tf.float32))
        return self._fns[key]

    def _set_threshold(self, threshold: float | None) -> None:
        value = np.inf if threshold is None else float(threshold)
        if value != self._threshold_value:
            self._threshold_var.assign(value)
            self._threshold_value = value

    def bucket_for(self, n: int) -> int:
        """Smallest bucket holding n instances (n must not exceed the largest bucket)."""
        return self.bucket_sizes[bisect.bisect_left(self.bucket_sizes, n)]

    def __call__(
        self, x: np.ndarray, threshold: float | None = None, batch_size: int | None = None, with_probs: bool = False
    ) -> dict[str, np.ndarray]:
        """Score x (n, *input_shape) in chunks of at most min(batch_size, largest bucket).

        Returns instance_score, is_adversarial, corrected, no_defense, defense (and p, q with_probs).
        """
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        if n == 0:
            x = np.zeros((1, *x.shape[1:]), np.float32)
        chunk = self.bucket_sizes[-1] if batch_size is None else max(1, min(int(batch_size), self.bucket_sizes[-1]))
        feature_shape = tuple(x.shape[1:])
        packed_parts, p_parts, q_parts = [], [], []
        with self._lock:
            self._set_threshold(threshold)
            for start in range(0, len(x), chunk):
                xb = x[start : start + chunk]
                m = xb.shape[0]
                size = self.bucket_for(m)
                if size != m:
                    xb = np.concatenate([xb, np.zeros((size - m, *xb.shape[1:]), dtype=np.float32)])
                out = self._fn(size, with_probs, feature_shape)(tf.convert_to_tensor(xb))
                if with_probs:
                    out, p, q = out
                    p_parts.append(p.numpy()[:m])
                    q_parts.append(q.numpy()[:m])
                packed_parts.append(out.numpy()[:m])
        packed = (packed_parts[0] if len(packed_parts) == 1 else np.concatenate(packed_parts))[:n]
        result = {
            INSTANCE_SCORE: np.ascontiguousarray(packed[:, 0]),
            IS_ADVERSARIAL: packed[:, 1] > 0.5,
            CORRECTED: packed[:, 2].astype(np.int64),
            NO_DEFENSE: packed[:, 3].astype(np.int64),
            DEFENSE: packed[:, 4].astype(np.int64),
        }
        if with_probs:
            result["p"] = (p_parts[0] if len(p_parts) == 1 else np.concatenate(p_parts))[:n]
            result["q"] = (q_parts[0] if len(q_parts) == 1 else np.concatenate(q_parts))[:n]
        return result

    def warmup(self, input_shape: Sequence[int], up_to: int | None = None) -> None:
        """Trace every bucket (up to ``up_to`` instances) now, so the first live batch pays no tracing."""
        for size in self.bucket_sizes:
            if up_to is not None and size > self.bucket_for(min(up_to, self.bucket_sizes[-1])):
                break
            self._fn(size, False, tuple(input_shape))(tf.zeros((size, *input_shape), tf.float32))


class ThresholdedScorer:
    """The detector as the stream sees it (adae_stream.scoring.StreamScorer): numpy in, numpy out, no TF types."""

    def __init__(self, fused: FusedScorer, info: ScorerInfo) -> None:
        self.fused = fused
        self.info = replace(info, runtime=f"tensorflow {tf.__version__}")

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.fused(x, self.info.threshold)

    def warmup(self, up_to: int | None = None) -> None:
        self.fused.warmup(self.info.input_shape, up_to)
