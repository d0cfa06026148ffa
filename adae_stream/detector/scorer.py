"""The fused, compiled scoring function: one graph call per batch computes everything a request needs.

Why fused: the reference runs AE(x), M(x), M(AE(x)) as separate eager passes (and correct() runs them
again), copying tensors to numpy between them. Here one tf.function does M(x), AE(x), M(AE(x)), the
KL terms, the flags and the corrected labels. Why buckets: inputs are zero-padded up to one of a few
fixed batch sizes, so each size is traced once and never again, whatever sizes traffic arrives in.
"""
from __future__ import annotations

import bisect
import logging
from typing import Sequence

import numpy as np
import tensorflow as tf

from adae_stream.detector.losses import kld, temperature_scale

log = logging.getLogger(__name__)


class _BucketTracesAreIntended(logging.Filter):
    """TF warns after 5 traces of one Python function; one trace per bucket is the design here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("FusedScorer" in record.getMessage() and "retracing" in record.getMessage())


tf.get_logger().addFilter(_BucketTracesAreIntended())

DEFAULT_BUCKETS: tuple[int, ...] = (1, 8, 32, 128, 256, 1024)
OUTPUT_KEYS = ("instance_score", "p", "q", "is_adversarial", "corrected", "no_defense", "defense")


class FusedScorer:
    """Callable ``x -> dict of numpy arrays`` over a detector's models; the stream's only view of TF."""

    def __init__(
        self,
        model: tf.keras.Model,
        ae: tf.keras.Model,
        model_hl: Sequence[tf.keras.Model] | None = None,
        w_model_hl: Sequence[float] | None = None,
        temperature: float = 1.0,
        bucket_sizes: Sequence[int] = DEFAULT_BUCKETS,
        jit_compile: bool = False,
    ) -> None:
        if not bucket_sizes or any(int(b) < 1 for b in bucket_sizes):
            raise ValueError(f"bucket_sizes must be positive integers, got {bucket_sizes!r}")
        self.bucket_sizes = tuple(sorted({int(b) for b in bucket_sizes}))
        hl = list(model_hl or [])
        weights = [float(w) for w in (w_model_hl if w_model_hl is not None else [1.0] * len(hl))]
        temperature = float(temperature)

        def graph(x: tf.Tensor, threshold: tf.Tensor) -> dict[str, tf.Tensor]:
            x_recon = ae(x, training=False)
            p = temperature_scale(model(x, training=False), temperature)
            q = model(x_recon, training=False)
            score = kld(p, q)
            for m, w in zip(hl, weights):
                score += tf.constant(w, score.dtype) * kld(m(x, training=False), m(x_recon, training=False))
            flags = score > tf.cast(threshold, score.dtype)
            no_defense = tf.argmax(p, axis=-1)
            defense = tf.argmax(q, axis=-1)
            return {
                "instance_score": score,
                "p": p,
                "q": q,
                "is_adversarial": flags,
                "corrected": tf.where(flags, defense, no_defense),
                "no_defense": no_defense,
                "defense": defense,
            }

        # One tf.function per bucket: each is traced exactly once, for its one fixed shape.
        self._fns = {size: tf.function(graph, jit_compile=jit_compile) for size in self.bucket_sizes}

    def bucket_for(self, n: int) -> int:
        """Smallest bucket holding n instances (n must not exceed the largest bucket)."""
        return self.bucket_sizes[bisect.bisect_left(self.bucket_sizes, n)]

    def __call__(self, x: np.ndarray, threshold: float | None = None, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Score x (n, *input_shape) in chunks of at most min(batch_size, largest bucket)."""
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        chunk = self.bucket_sizes[-1] if batch_size is None else max(1, min(int(batch_size), self.bucket_sizes[-1]))
        thr = tf.constant(np.inf if threshold is None else float(threshold), tf.float32)
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, n, chunk):
            xb = x[start : start + chunk]
            m = xb.shape[0]
            size = self.bucket_for(m)
            if size != m:
                xb = np.concatenate([xb, np.zeros((size - m,) + xb.shape[1:], dtype=np.float32)])
            out = self._fns[size](tf.convert_to_tensor(xb), thr)
            parts.append({k: v.numpy()[:m] for k, v in out.items()})
        if not parts:
            return self._empty(x.shape[1:])
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in OUTPUT_KEYS}

    def warmup(self, input_shape: Sequence[int], up_to: int | None = None) -> None:
        """Trace every bucket (up to ``up_to`` instances) now, so the first live batch pays no tracing."""
        for size in self.bucket_sizes:
            if up_to is not None and size > self.bucket_for(min(up_to, self.bucket_sizes[-1])):
                break
            self._fns[size](tf.zeros((size, *input_shape), tf.float32), tf.constant(np.inf, tf.float32))

    def _empty(self, feature_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        size = self.bucket_sizes[0]
        out = self._fns[size](tf.zeros((size, *feature_shape), tf.float32), tf.constant(np.inf, tf.float32))
        return {k: v.numpy()[:0] for k, v in out.items()}


RESULT_KEYS = ("instance_score", "is_adversarial", "corrected", "no_defense", "defense")


class ThresholdedScorer:
    """What the stream sees of a detector: shapes, threshold, and ``x -> result arrays``. No TF types leak."""

    def __init__(self, fused: FusedScorer, threshold: float, input_shape: tuple[int, ...], n_classes: int,
                 version: str, reference_scores: np.ndarray | None) -> None:
        self.fused = fused
        self.threshold = float(threshold)
        self.input_shape = tuple(input_shape)
        self.n_classes = n_classes
        self.version = version
        self.reference_scores = reference_scores

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = self.fused(x, self.threshold)
        return {k: out[k] for k in RESULT_KEYS}

    def warmup(self, up_to: int | None = None) -> None:
        self.fused.warmup(self.input_shape, up_to)
