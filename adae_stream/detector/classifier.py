"""What the detector needs of a classifier, whatever framework it comes from: a frozen callable
``model(x, training=False) -> probabilities`` on the backend's tensors, its input shape and its
number of classes. A Keras model is one as it is; a PyTorch module is one through TorchClassifier
(detector/torch_classifier.py), on the torch backend."""

from __future__ import annotations

from typing import Any

import keras

Classifier = Any  # a keras.Model, or a TorchClassifier on the torch backend


def is_keras(model: Any) -> bool:
    return isinstance(model, keras.Model)


def check(model: Any) -> Classifier:
    """Refuse, at construction, anything that is neither a Keras model nor an adapted PyTorch module."""
    from_torch = type(model).__name__ == "TorchClassifier"
    if not (is_keras(model) or from_torch):
        raise TypeError(
            "model must be a keras.Model (the frozen classifier with softmax outputs) or, on the torch backend, "
            f"a TorchClassifier (adae_stream.detector.torch_classifier); got {type(model).__name__}"
        )
    return model


def input_shape(model: Any) -> tuple[int, ...]:
    """Per-instance input shape of the classifier (what the stream validates requests against)."""
    if not is_keras(model):
        return tuple(model.input_shape)
    try:
        shape = model.inputs[0].shape[1:]
    except (AttributeError, IndexError, ValueError, TypeError) as exc:
        raise ValueError("the classifier's input shape is unknown; build it with an Input layer") from exc
    return tuple(int(d) for d in shape)


def n_classes(model: Any) -> int:
    return int(model.outputs[0].shape[-1]) if is_keras(model) else int(model.n_classes)
