"""Scoring in mixed precision: opt-in, thresholded in the precision it serves, saved with the detector."""

from __future__ import annotations

import numpy as np
import pytest

from adae_stream import AdversarialAE
from tests.conftest import iris_ae_nets


def weighted_leaf_dtypes(model) -> list[str]:
    out = []
    for layer in model.layers:
        out += (
            weighted_leaf_dtypes(layer)
            if getattr(layer, "layers", None)
            else ([layer.compute_dtype] if layer.weights else [])
        )
    return out


def test_bfloat16_scores_follow_float32_and_the_threshold_is_inferred_in_bfloat16(digits_setup):
    from adae_stream.detector.attacks import fgsm

    det = digits_setup["detector"]
    X, Xte = digits_setup["Xtr"], digits_setup["Xte"]
    d16 = AdversarialAE(ae=det.ae, model=det.model, precision="mixed_bfloat16")
    # scoring really runs on bfloat16 copies; the float32 originals are untouched
    n_ae, n_model = len(weighted_leaf_dtypes(det.ae)), len(weighted_leaf_dtypes(det.model))
    assert (
        weighted_leaf_dtypes(det.ae) == ["float32"] * n_ae and weighted_leaf_dtypes(det.model) == ["float32"] * n_model
    )
    assert weighted_leaf_dtypes(d16._compute_ae) == ["bfloat16"] * n_ae
    assert weighted_leaf_dtypes(d16._compute_model) == ["bfloat16"] * (n_model - 1) + [
        "float32"
    ]  # float32 probabilities
    s32, s16 = det.score(X), d16.score(X)
    assert s16.dtype == np.float32 and np.isfinite(s16).all()
    assert not np.array_equal(s16, s32)  # a different precision gives different arithmetic
    # small against the scale that decides flags (the 95th percentile, where the threshold sits). Not per
    # instance: a score is a KL between two near-equal distributions, so bfloat16's ~0.4 % per rounding can be
    # a large share of the best-reconstructed instances' tiny scores (the per-instance median ratio was
    # 0.03-0.04 in local runs and 0.102 once on CI, on a detector trained the same way: TF's CPU training is
    # not bit-reproducible); measured against the 95th percentile it was 0.002-0.003
    assert np.median(np.abs(s16 - s32)) < 0.05 * np.percentile(s32, 95)
    assert np.corrcoef(np.log(s16 + 1e-7), np.log(s32 + 1e-7))[0, 1] > 0.95
    # infer_threshold scores in bfloat16, so the percentile holds for the scores it is compared with
    # (the 95th percentile, as the float32 detector's, so the flags below compare like with like)
    d16.infer_threshold(X, threshold_perc=95)
    assert 0.94 <= np.mean(d16.score(X) <= d16.threshold) <= 0.96
    # detection and correction survive the change of precision
    x_adv = fgsm(det.model, Xte[:200], digits_setup["yte"][:200], eps=0.3)
    f32, f16 = det.correct(x_adv)["data"], d16.correct(x_adv)["data"]
    assert np.mean(f32["corrected"] == f16["corrected"]) > 0.9
    assert np.mean(f32["is_adversarial"] == f16["is_adversarial"]) > 0.9


def test_fit_refreshes_the_bfloat16_copy(iris, iris_model):
    X, _ = iris
    enc, dec = iris_ae_nets()
    d16 = AdversarialAE(encoder_net=enc, decoder_net=dec, model=iris_model, precision="mixed_bfloat16")
    d16.score(X)  # compiles the scorer before fit: it must still see the trained weights after
    f32_before = AdversarialAE(ae=d16.ae, model=iris_model).score(X)
    d16.fit(X, epochs=50, batch_size=32, verbose=False)
    f32_after = AdversarialAE(ae=d16.ae, model=iris_model).score(X)  # the trained float32 AE itself
    after = d16.score(X)

    def rel(a, b):
        return float(np.median(np.abs(a - b) / np.maximum(b, 1e-6)))

    assert rel(f32_before, f32_after) > 0.3  # training moved the scores
    assert rel(after, f32_after) < 0.1  # and the bfloat16 copy moved with them


def test_hidden_layer_terms_in_bfloat16(iris, iris_model):
    X, _ = iris
    enc, dec = iris_ae_nets()
    d32 = AdversarialAE(encoder_net=enc, decoder_net=dec, model=iris_model, hidden_layer_kld={1: 3}, w_model_hl=[0.5])
    # the same AE and hidden-layer extractors (those stay float32), scored in bfloat16
    d16 = AdversarialAE(
        ae=d32.ae, model=iris_model, model_hl=d32.model_hl, w_model_hl=[0.5], precision="mixed_bfloat16"
    )
    s32, s16 = d32.score(X), d16.score(X)
    assert np.isfinite(s16).all()
    assert np.median(np.abs(s16 - s32) / np.maximum(s32, 1e-6)) < 0.1


def test_precision_errors(iris_model):
    import tensorflow as tf

    with pytest.raises(
        ValueError, match="precision must be one of float32, mixed_bfloat16, mixed_float16; got 'float16'"
    ):
        AdversarialAE(
            ae=tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(4)]),
            model=iris_model,
            precision="float16",
        )

    class NoConfig(tf.keras.Model):  # a subclassed AE that cannot be rebuilt from its config
        def __init__(self):
            super().__init__()
            self.dense = tf.keras.layers.Dense(4)

        def call(self, x):
            return self.dense(x)

    ae = NoConfig()
    ae(np.zeros((1, 4), np.float32))
    AdversarialAE(ae=ae, model=iris_model)  # float32 needs no copy
    with pytest.raises(
        ValueError,
        match=r"(?s)precision='mixed_bfloat16' rebuilds 'no_config' from its config, which failed "
        r".* use precision='float32'",
    ):
        AdversarialAE(ae=ae, model=iris_model, precision="mixed_bfloat16")
