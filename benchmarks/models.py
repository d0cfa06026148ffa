"""The two benchmark model sets: a small tabular one and the seed's CIFAR-shaped nets."""

from __future__ import annotations

import numpy as np

from adae_stream.scoring import buckets_up_to


def tabular():
    """20 features, Dense classifier (3 classes), Dense AE."""
    import keras

    from adae_stream import AdversarialAE
    from adae_stream.detector.presets import dense_ae, dense_classifier

    keras.utils.set_random_seed(0)
    det = AdversarialAE(ae=dense_ae((20,), 10), model=dense_classifier(20, 3), data_type="tabular")
    x = np.random.default_rng(0).normal(size=(4096, 20)).astype(np.float32)
    det.infer_threshold(x[:1024], 95)
    return det, x


def digits():
    """The demo's and tests' shape: sklearn digits (8x8x1), the small CNN and the conv AE (untrained: timing only)."""
    import keras

    from adae_stream import AdversarialAE
    from adae_stream.demo.data import load_digits_split
    from adae_stream.detector.presets import conv_ae, small_cnn

    keras.utils.set_random_seed(0)
    x = load_digits_split()[0].astype(np.float32)
    det = AdversarialAE(ae=conv_ae((8, 8, 1)), model=small_cnn((8, 8, 1), 10, width=16), data_type="image")
    det.infer_threshold(x[:256], 95)
    return det, np.concatenate([x] * (1 + 1024 // len(x)))[:1024]


def cifar():
    """The seed's CIFAR encoder/decoder with a small conv classifier (untrained: timing only)."""
    import keras

    from adae_stream import AdversarialAE
    from adae_stream.detector.presets import cifar_decoder, cifar_encoder, small_cnn

    keras.utils.set_random_seed(0)
    det = AdversarialAE(
        encoder_net=cifar_encoder(),
        decoder_net=cifar_decoder(),
        model=small_cnn((32, 32, 3), 10, width=16),
        data_type="image",
    )
    x = np.random.default_rng(0).uniform(size=(1024, 32, 32, 3)).astype(np.float32)
    det.infer_threshold(x[:256], 95)
    return det, x


# Batching per model, as an operator would set it: the tabular floor keeps rising to batch 1024
# (0.93M -> 2.26M instances/s from 256 to 1024: its cost is per call, not per instance), the CIFAR
# floor is flat past 256, where bigger batches only add latency.
BATCHING = {
    "tabular": (1024, [1, 8, 32, 64, 128, 192, 256, 384, 512, 768, 1024]),
    "cifar": (256, buckets_up_to(256)),
}
