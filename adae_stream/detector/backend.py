"""Which Keras 3 backend computes the detector in this process: TensorFlow (the default), JAX or PyTorch.

Why per process and chosen before Keras is imported: Keras reads ``KERAS_BACKEND`` once, at its first
import, and cannot switch afterwards. Why never two: TensorFlow and PyTorch in one process abort with
``LLVM ERROR: inconsistency in registered CommandLine options`` (each ships its own LLVM;
shared/reference/keras-backends.md), so a torch or JAX process must not import TensorFlow at all.

Everything backend-specific (compiling the score, the gradient step, input gradients for attacks)
lives in one small engine per backend (detector/engines/); the method itself is written in keras.ops.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

from adae_stream.errors import ConfigError

if TYPE_CHECKING:
    from adae_stream.detector.engines import Engine

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT = "tensorflow"


def select(name: str | None) -> str:
    """Make ``name`` (or KERAS_BACKEND, or TensorFlow) this process's backend; returns the one in force.

    Refuses, rather than silently scoring on another backend, when Keras already runs a different one."""
    wanted = name or os.environ.get("KERAS_BACKEND") or DEFAULT
    if wanted not in BACKENDS:
        raise ConfigError(f"unknown Keras backend {wanted!r}: choose one of {', '.join(BACKENDS)}")
    if "keras" in sys.modules:
        running = current()
        if running != wanted:
            raise ConfigError(
                f"this process already runs Keras on {running!r}; the backend is chosen once per process, "
                f"before Keras is imported (set KERAS_BACKEND={wanted} or detector.backend: {wanted} at start)"
            )
        return running
    os.environ["KERAS_BACKEND"] = wanted
    return wanted


def current() -> str:
    """The backend Keras runs on (imports Keras, on the backend KERAS_BACKEND names)."""
    import keras

    return str(keras.backend.backend())


def engine() -> Engine:
    """The engine of the backend in force: one module per backend, imported only when it is the one."""
    module = importlib.import_module(f"adae_stream.detector.engines.{current()}_engine")
    return module.ENGINE
