"""Hidden-layer models for ``hidden_layer_kld``: classifier features up to layer i, then a softmax head.

Built as plain functional Keras models (no custom classes) so they save as ``.keras`` and load under
safe_mode. As in the reference, the softmax heads are not trained: only the auto-encoder is optimised,
so a head is a fixed random projection of the hidden features into a distribution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras


def build_hidden_models(model: Any, hidden_layer_kld: Mapping[int, int]) -> list[keras.Model]:
    if not isinstance(model, keras.Model) or not model.inputs:
        raise ValueError(
            "hidden_layer_kld needs a classifier with known inputs (a built Functional or Sequential Keras model)"
        )
    models = []
    for layer_index, output_dim in hidden_layer_kld.items():
        try:
            features = model.layers[int(layer_index)].output
        except (IndexError, AttributeError, ValueError) as exc:
            raise ValueError(f"hidden_layer_kld: classifier has no usable layer {layer_index}: {exc}") from exc
        h = keras.layers.Flatten()(features)
        out = keras.layers.Dense(int(output_dim), activation="softmax")(h)
        models.append(keras.Model(model.inputs, out, name=f"hidden_kld_{int(layer_index)}"))
    return models
