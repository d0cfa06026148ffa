"""The fused, compiled scoring function: one compiled call per batch computes everything a request needs.

Why fused: the reference runs AE(x), M(x), M(AE(x)) as separate eager passes (and correct() runs them
again), copying tensors to numpy between them. Here one compiled function (losses.fused_score_graph,
compiled by the backend's engine) does M(x), AE(x), M(AE(x)), the KL terms, the flags and the corrected
labels. Why buckets: inputs are zero-padded up to one of a few fixed batch sizes, so each size is traced
once and never again, whatever sizes traffic arrives in. Why two compiled forms with ``jit_compile="auto"``:
see compile_choice.py.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from adae_stream.detector.backend import engine
from adae_stream.detector.compile_choice import REMEMBERED, architecture, second_is_faster, timed_pairs
from adae_stream.detector.losses import fused_score_graph
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

# True: the backend's ahead-of-time compiler (XLA on TF, torch.compile on torch); "auto": per bucket, the
# faster of the two forms at warm-up where the backend has a choice worth timing (compile_choice.py)
JitCompile = bool | Literal["auto"]


class FusedScorer:
    """Callable ``x -> dict of numpy arrays`` over a detector's models; the stream's only view of Keras."""

    def __init__(
        self,
        model: Any,
        ae: Any,
        model_hl: Sequence[Any] | None = None,
        w_model_hl: Sequence[float] | None = None,
        temperature: float = 1.0,
        bucket_sizes: Sequence[int] = BUCKET_SIZES,
        jit_compile: JitCompile = False,
    ) -> None:
        if not bucket_sizes or any(int(b) < 1 for b in bucket_sizes):
            raise ValueError(f"bucket_sizes must be positive integers, got {bucket_sizes!r}")
        self.bucket_sizes = tuple(sorted({int(b) for b in bucket_sizes}))
        hl = list(model_hl or [])
        weights = [float(w) for w in (w_model_hl if w_model_hl is not None else [1.0] * len(hl))]
        backend = engine()
        self.runtime = backend.runtime()
        graph = fused_score_graph(model, ae, hl, weights, float(temperature))
        # The threshold is state of the compiled function (a variable on TF): calls pass only x, and a
        # new threshold is an assignment, not a retrace.
        self._compiled = backend.compile_score(graph, jit_compile is True)
        # "auto": the alternative form, tried per bucket at warm-up; buckets never warmed keep the default
        self._alternative_form = backend.alternative_form if jit_compile == "auto" else None
        self._alternative = backend.compile_score(graph, True) if self._alternative_form else None
        self.alternative_buckets: list[int] = []  # the buckets that warm-up gave the alternative form
        self._architecture = architecture(model, ae, *hl) if self._alternative_form else ()
        self._threshold_value = np.inf
        self._lock = threading.Lock()  # threshold assignment + compiled call must not interleave across threads
        # One function per (bucket, with_probs): compiled once for its fixed shape, and called directly.
        self._fns: dict[tuple[int, bool], Callable[[np.ndarray], list[np.ndarray]]] = {}

    def _fn(self, size: int, with_probs: bool, feature_shape: tuple[int, ...]) -> Callable[[np.ndarray], list]:
        key = (size, with_probs)
        if key not in self._fns:
            alternative = self._alternative if size in self.alternative_buckets else None
            compiled = alternative if alternative is not None else self._compiled
            self._fns[key] = compiled.fn(size, with_probs, feature_shape)
        return self._fns[key]

    def _set_threshold(self, threshold: float | None) -> None:
        value = np.inf if threshold is None else float(threshold)
        if value != self._threshold_value:
            self._compiled.set_threshold(value)
            if self._alternative is not None:
                self._alternative.set_threshold(value)
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
                out = self._fn(size, with_probs, feature_shape)(xb)
                if with_probs:
                    p_parts.append(out[1][:m])
                    q_parts.append(out[2][:m])
                packed_parts.append(out[0][:m])
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
        """Trace every bucket (up to ``up_to`` instances) now, so the first live batch pays no tracing; with
        ``jit_compile="auto"``, from the smallest bucket up, each takes the alternative form while that
        is faster, as timed here or, for an architecture timed before in this process, as timed then
        (compile_choice.py)."""
        shape = tuple(input_shape)
        last = None if up_to is None else self.bucket_for(min(up_to, self.bucket_sizes[-1]))
        sizes = tuple(size for size in self.bucket_sizes if last is None or size <= last)
        key = (self._architecture, shape, sizes)
        known = REMEMBERED.get(key) if self._alternative is not None else None
        trying = self._alternative is not None and known is None
        with self._lock:
            for size in sizes:
                x = np.zeros((size, *shape), np.float32)
                if known is not None and size in known:
                    alternative = self._compiled_alternative(size, shape, x)
                    if alternative is not None:
                        self._take_alternative(size, alternative)
                        continue
                default = self._fn(size, False, shape)
                default(x)
                if trying:
                    alternative = self._compiled_alternative(size, shape, x)
                    won = alternative is not None and second_is_faster(*timed_pairs(default, alternative, x))
                    if won and alternative is not None:
                        self._take_alternative(size, alternative)
                    trying = won  # XLA's lead shrinks with the batch: past its first loss, not tried again
        if self._alternative_form is not None:
            if known is None:
                REMEMBERED[key] = tuple(self.alternative_buckets)
            log.info(
                "scoring compiled per bucket (jit_compile: auto): %s for %s, the default form for the rest%s",
                self._alternative_form,
                self.alternative_buckets or "none",
                "" if known is None else " (as timed for this architecture before)",
            )

    def _compiled_alternative(self, size: int, shape: tuple[int, ...], x: np.ndarray) -> Callable | None:
        """The alternative form's function for this bucket, called once; None where it cannot compile."""
        assert self._alternative is not None
        try:
            alternative = self._alternative.fn(size, False, shape)
            alternative(x)
        except Exception as exc:  # a model the compiler cannot take: the default form serves, as before
            log.warning(
                "%s could not compile bucket %d (%s): the default form serves", self._alternative_form, size, exc
            )
            return None
        return alternative

    def _take_alternative(self, size: int, alternative: Callable) -> None:
        self._fns[(size, False)] = alternative
        self.alternative_buckets.append(size)


class ThresholdedScorer:
    """The detector as the stream sees it (adae_stream.scoring.StreamScorer): numpy in, numpy out, no backend types."""

    def __init__(self, fused: FusedScorer, info: ScorerInfo) -> None:
        self.fused = fused
        self.info = replace(info, runtime=fused.runtime)

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.fused(x, self.info.threshold)

    def warmup(self, up_to: int | None = None) -> None:
        self.fused.warmup(self.info.input_shape, up_to)
