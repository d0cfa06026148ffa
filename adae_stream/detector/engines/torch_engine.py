"""PyTorch: scores eagerly under ``torch.inference_mode`` (or through ``torch.compile`` with
``detector.jit_compile``), trains with autograd and the Keras optimizer.

Why eager by default: torch.compile scored a CIFAR-shaped pair 2.7x faster than eager at batch 256 but
took 24.8 s to compile each shape, once per bucket; Keras' own ``jit_compile=True`` on torch took 77.6 s
for a fit that took 3.4 s eager (shared/reference/keras-backends.md). The operator chooses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from adae_stream.detector.engines import Loss, ScoreGraph


def device() -> torch.device:
    """Where Keras' torch backend puts tensors (a GPU when one is visible)."""
    from keras.src.backend.torch.core import get_device

    return torch.device(get_device())


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, np.float32), device=device())


def _numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


class _Compiled:
    def __init__(self, graph: ScoreGraph, jit_compile: bool) -> None:
        self._graph, self._jit = graph, jit_compile
        self._threshold = torch.tensor(np.inf, dtype=torch.float32, device=device())

    def set_threshold(self, value: float) -> None:
        self._threshold = torch.tensor(value, dtype=torch.float32, device=device())

    def fn(self, size: int, with_probs: bool, feature_shape: tuple[int, ...]) -> Callable[[np.ndarray], list]:
        graph = self._graph

        def run(x: torch.Tensor, threshold: torch.Tensor) -> tuple[Any, ...]:
            return graph(x, threshold, with_probs)

        compiled = torch.compile(run, dynamic=False) if self._jit else run

        def call(x: np.ndarray) -> list[np.ndarray]:
            with torch.inference_mode():
                return [_numpy(t) for t in compiled(_tensor(x), self._threshold)]

        return call


class _Steps:
    """Keras' own torch train step, by hand: forward, backward, optimizer.apply without gradients."""

    def __init__(self, ae: Any, opt: Any, loss: Loss) -> None:
        self._ae, self._opt, self._loss = ae, opt, loss

    def _zero_grad(self) -> None:
        for v in self._ae.trainable_variables:
            v.value.grad = None

    def train(self, x: np.ndarray) -> tuple[float, Any]:
        xt = _tensor(x)
        self._zero_grad()
        x_pred = self._ae(xt, training=True)
        value = self._loss(xt, x_pred)
        if self._ae.losses:
            value = value + sum(self._ae.losses)
        value.backward()
        variables = self._ae.trainable_variables
        with torch.no_grad():
            self._opt.apply([v.value.grad for v in variables], variables)
        self._zero_grad()
        return float(value.detach()), x_pred.detach()

    def evaluate(self, x: np.ndarray) -> float:
        with torch.no_grad():
            xt = _tensor(x)
            return float(self._loss(xt, self._ae(xt, training=False)))

    def weights(self) -> list[np.ndarray]:
        return [_numpy(v.value).copy() for v in self._ae.trainable_variables]

    def restore(self, values: Sequence[np.ndarray]) -> None:
        for var, value in zip(self._ae.trainable_variables, values, strict=True):
            var.assign(value)

    def finish(self) -> None:
        pass


class TorchEngine:
    name = "torch"
    # torch.compile takes ~25 s per shape (above): too long to try at every load; jit_compile: true asks for it
    alternative_form = None

    def runtime(self) -> str:
        return f"torch {torch.__version__}"

    def devices(self) -> list[str]:
        return [str(device())]

    def compile_score(self, graph: ScoreGraph, jit_compile: bool) -> _Compiled:
        return _Compiled(graph, jit_compile)

    def train_steps(self, ae: Any, optimizer: Any, loss: Loss) -> _Steps:
        return _Steps(ae, optimizer, loss)

    def loss_grad_sign(self, model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        import keras

        xt = _tensor(x).requires_grad_(True)
        yt = torch.as_tensor(np.asarray(y), device=device())
        loss = keras.losses.sparse_categorical_crossentropy(yt, model(xt, training=False))
        (grad,) = torch.autograd.grad(loss.sum(), xt)
        return _numpy(torch.sign(grad))


ENGINE = TorchEngine()
