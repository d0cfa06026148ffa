"""Training the auto-encoder of an AdversarialAE, apart from the method (as alibi-detect keeps its trainer).

The detector class says what is trained and against what loss; this module says how: the backend's
training step (compiled on TF and JAX; alibi-detect's trainer runs its step eagerly), epochs over a
full permutation, Keras callbacks, a progress bar, and optional validation with early stopping that
restores the best epoch's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from adae_stream.detector.backend import engine
from adae_stream.detector.engines import Steps


@dataclass
class TrainingRecord:
    """What a run leaves behind: the mean loss per epoch, the loss of every batch, the validation loss."""

    history: list[float] = field(default_factory=list)
    batch_history: list[float] = field(default_factory=list)
    val_history: list[float] = field(default_factory=list)


@dataclass
class Training:
    """How to train: the seed's fit parameters that are not about the method. No defaults here: they are
    AdversarialAE.fit's, the one signature users see."""

    epochs: int
    batch_size: int
    verbose: bool
    log_metric: tuple[str, keras.metrics.Metric] | None
    callbacks: Sequence[keras.callbacks.Callback] | keras.callbacks.Callback | None
    preprocess_fn: Callable[[np.ndarray], Any] | None
    validation_data: np.ndarray | None
    patience: int | None
    rng: np.random.Generator | None


def make_optimizer(optimizer: keras.optimizers.Optimizer | type | None) -> keras.optimizers.Optimizer:
    """The seed's default (Adam, 1e-3), a class to instantiate, or an optimizer as given."""
    if optimizer is None:
        return keras.optimizers.Adam(learning_rate=1e-3)
    return optimizer() if isinstance(optimizer, type) else optimizer


def _callback_list(callbacks: Any, ae: keras.Model) -> keras.callbacks.CallbackList:
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks
    listed = list(callbacks) if isinstance(callbacks, (list, tuple)) else ([callbacks] if callbacks else [])
    return keras.callbacks.CallbackList(listed, model=ae)


def _as_batch(xb: np.ndarray, preprocess_fn: Callable[[np.ndarray], Any] | None) -> np.ndarray:
    return np.asarray(preprocess_fn(xb) if preprocess_fn is not None else xb, np.float32)


def _validation_loss(steps: Steps, X: np.ndarray, batch_size: int, preprocess_fn: Callable | None) -> float:
    """Mean loss over the validation set, weighted by batch size."""
    total, n = 0.0, 0
    for i in range(0, len(X), batch_size):
        xb = X[i : i + batch_size]
        total += steps.evaluate(_as_batch(xb, preprocess_fn)) * len(xb)
        n += len(xb)
    return total / max(n, 1)


def _epoch(steps: Steps, X: np.ndarray, how: Training, rng: np.random.Generator, record: TrainingRecord) -> dict:
    """One pass over a fresh permutation of X; returns the epoch's logs (mean loss, the logged metric)."""
    n_batches = int(np.ceil(len(X) / how.batch_size))
    bar = None
    if how.verbose:
        bar = keras.utils.Progbar(
            n_batches, stateful_metrics=["loss"] + ([how.log_metric[0]] if how.log_metric else [])
        )
    if how.log_metric:
        how.log_metric[1].reset_state()
    order = rng.permutation(len(X))
    total, values = 0.0, [("loss", 0.0)]
    for step in range(n_batches):
        xb = _as_batch(X[order[step * how.batch_size : (step + 1) * how.batch_size]], how.preprocess_fn)
        loss, x_pred = steps.train(xb)
        record.batch_history.append(loss)
        total += loss
        values = [("loss", total / (step + 1))]
        if how.log_metric:
            how.log_metric[1](xb, x_pred)
            values.append((how.log_metric[0], float(how.log_metric[1].result())))
        if bar is not None:
            bar.update(step + 1, values=values)
    return dict(values)


def train_ae(
    ae: keras.Model,
    X: np.ndarray,
    loss: Callable[[Any, Any], Any],
    optimizer: keras.optimizers.Optimizer,
    how: Training,
) -> TrainingRecord:
    """Train ``ae`` on X against ``loss(x_true, x_pred)``, which runs inside the backend's step."""
    first = X[: min(how.batch_size, len(X))]
    ae(_as_batch(first, how.preprocess_fn))  # variables and optimizer slots exist before the step is traced
    optimizer.build(ae.trainable_variables)
    steps = engine().train_steps(ae, optimizer, loss)
    cb = _callback_list(how.callbacks, ae)
    rng = how.rng if how.rng is not None else np.random.default_rng()
    record = TrainingRecord()
    best: tuple[float, list[np.ndarray]] | None = None
    cb.on_train_begin()
    for epoch in range(how.epochs):
        cb.on_epoch_begin(epoch)
        if how.verbose:
            print(f"Epoch {epoch + 1}/{how.epochs}")
        logs = _epoch(steps, X, how, rng, record)
        record.history.append(logs["loss"])
        if how.validation_data is not None:
            logs["val_loss"] = _validation_loss(steps, how.validation_data, how.batch_size, how.preprocess_fn)
            record.val_history.append(logs["val_loss"])
            if best is None or logs["val_loss"] < best[0]:
                best = (logs["val_loss"], steps.weights())
            if how.verbose:
                print(f"val_loss {logs['val_loss']:.6g}")
        cb.on_epoch_end(epoch, logs)
        if getattr(ae, "stop_training", False):
            break
        if how.patience is not None and best is not None:
            if len(record.val_history) - 1 - record.val_history.index(best[0]) >= how.patience:
                break
    if how.patience is not None and best is not None:  # early stopping restores the best epoch's weights
        steps.restore(best[1])
    steps.finish()  # the AE's variables hold the trained weights from here on (JAX trains on copies)
    cb.on_train_end()
    return record
