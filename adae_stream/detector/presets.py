"""Ready encoder/decoder pairs: a Dense AE for tabular data, a conv AE for small images, and the seed's
CIFAR-10 nets exactly as the method documentation gives them."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

layers = keras.layers
l1 = keras.regularizers.l1


def dense_ae(input_shape: Sequence[int], latent_dim: int | None = None, hidden: int = 64) -> keras.Model:
    """Dense AE over flattened features, reshaped back; works for any input shape."""
    dim = int(np.prod(input_shape))
    latent = latent_dim or max(2, dim // 2)
    return keras.Sequential(
        [
            keras.Input(tuple(input_shape)),
            layers.Flatten(),
            layers.Dense(hidden, activation="relu"),
            layers.Dense(latent, activation="relu"),
            layers.Dense(hidden, activation="relu"),
            layers.Dense(dim),
            layers.Reshape(tuple(input_shape)),
        ],
        name="dense_ae",
    )


def conv_ae(input_shape: Sequence[int], latent_dim: int = 32, channels_first: bool = False) -> keras.Model:
    """Two stride-2 conv layers down, two transposed up; needs H and W divisible by 4. ``channels_first``:
    (C, H, W) instances, as PyTorch classifiers take them."""
    dims = [int(d) for d in input_shape]
    c, h, w = dims if channels_first else (dims[2], dims[0], dims[1])
    if h % 4 or w % 4:
        raise ValueError(f"conv preset needs H and W divisible by 4, got {input_shape}")
    fmt = "channels_first" if channels_first else "channels_last"
    grid = (64, h // 4, w // 4) if channels_first else (h // 4, w // 4, 64)
    return keras.Sequential(
        [
            keras.Input(tuple(dims)),
            layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", data_format=fmt),
            layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", data_format=fmt),
            layers.Flatten(),
            layers.Dense(latent_dim),
            layers.Dense((h // 4) * (w // 4) * 64, activation="relu"),
            layers.Reshape(grid),
            layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu", data_format=fmt),
            layers.Conv2DTranspose(c, 3, strides=2, padding="same", data_format=fmt),
        ],
        name="conv_ae",
    )


def cifar_encoder(latent_dim: int = 40) -> keras.Sequential:
    """The seed's encoder_net example for 32x32x3 inputs."""
    return keras.Sequential(
        [
            layers.InputLayer(shape=(32, 32, 3)),
            layers.Conv2D(32, 4, strides=2, padding="same", activation="relu", kernel_regularizer=l1(1e-5)),
            layers.Conv2D(64, 4, strides=2, padding="same", activation="relu", kernel_regularizer=l1(1e-5)),
            layers.Conv2D(256, 4, strides=2, padding="same", activation="relu", kernel_regularizer=l1(1e-5)),
            layers.Flatten(),
            layers.Dense(latent_dim),
        ]
    )


def cifar_decoder(latent_dim: int = 40) -> keras.Sequential:
    """The seed's decoder_net example, back to 32x32x3."""
    return keras.Sequential(
        [
            layers.InputLayer(shape=(latent_dim,)),
            layers.Dense(4 * 4 * 128, activation="relu"),
            layers.Reshape(target_shape=(4, 4, 128)),
            layers.Conv2DTranspose(256, 4, strides=2, padding="same", activation="relu", kernel_regularizer=l1(1e-5)),
            layers.Conv2DTranspose(64, 4, strides=2, padding="same", activation="relu", kernel_regularizer=l1(1e-5)),
            layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation=None, kernel_regularizer=l1(1e-5)),
        ]
    )


def small_cnn(input_shape: Sequence[int], n_classes: int, width: int = 32) -> keras.Model:
    """A small conv classifier (softmax output) used by the demo and the CIFAR-shaped benchmark."""
    return keras.Sequential(
        [
            keras.Input(tuple(input_shape)),
            layers.Conv2D(width, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(2 * width, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="classifier",
    )


def dense_classifier(n_features: int, n_classes: int, hidden: int = 64) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((n_features,)),
            layers.Dense(hidden, activation="relu"),
            layers.Dense(hidden, activation="relu"),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="classifier",
    )


AE_PRESETS = {"dense": dense_ae, "conv": conv_ae}
