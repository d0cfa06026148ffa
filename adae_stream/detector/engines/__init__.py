"""What each backend must provide beyond keras.ops: compiling the fused score, the AE's gradient step,
and input gradients for the white-box attacks. One module per backend, imported only by the process
that runs on it (adae_stream.detector.backend.engine)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

# graph(x, threshold, with_probs) -> (packed (n, 5) float32[, p, q]) in backend tensors (losses.fused_score_graph)
ScoreGraph = Callable[[Any, Any, bool], tuple[Any, ...]]
# loss(x_true, x_pred) -> scalar backend tensor
Loss = Callable[[Any, Any], Any]


class CompiledScore(Protocol):
    """The compiled form of one scorer's graph: one function per (bucket size, with_probs)."""

    def set_threshold(self, value: float) -> None: ...

    def fn(
        self, size: int, with_probs: bool, feature_shape: tuple[int, ...]
    ) -> Callable[[np.ndarray], list[np.ndarray]]:
        """x (size, *feature_shape) float32 -> [packed[, p, q]] as numpy arrays."""
        ...


class Steps(Protocol):
    """One training run's compiled steps; ``finish`` writes back state a functional backend kept apart."""

    def train(self, x: np.ndarray) -> tuple[float, Any]: ...

    def evaluate(self, x: np.ndarray) -> float: ...

    def weights(self) -> list[np.ndarray]: ...

    def restore(self, values: Sequence[np.ndarray]) -> None: ...

    def finish(self) -> None: ...


class Engine(Protocol):
    name: str
    # the compiled form that ``detector.jit_compile: auto`` times against the default one per bucket
    # (detector/compile_choice.py), or None where there is no choice worth timing at warm-up
    alternative_form: str | None

    def runtime(self) -> str:
        """What computes the scores and its version, e.g. "torch 2.15.0" (ScorerInfo.runtime)."""
        ...

    def devices(self) -> list[str]: ...

    def compile_score(self, graph: ScoreGraph, jit_compile: bool) -> CompiledScore: ...

    def train_steps(self, ae: Any, optimizer: Any, loss: Loss) -> Steps: ...

    def loss_grad_sign(self, model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """sign of d cross-entropy(y, model(x)) / dx, for FGSM and PGD."""
        ...
