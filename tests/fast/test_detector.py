"""The detector against its contract: the reference's grid, the formulas in numpy, every parameter.

Backend-neutral: `make test` runs this file on TensorFlow, and again on JAX and on PyTorch in their own
environments (KERAS_BACKEND), so alibi-detect's semantics are checked on every backend."""

from __future__ import annotations

import itertools
from typing import ClassVar

import keras
import numpy as np
import pytest
from keras import ops

from adae_stream import AdversarialAE
from adae_stream.detector.losses import loss_adv_ae
from adae_stream.errors import ThresholdNotSetError
from tests.answer_checks import assert_same_answers
from tests.conftest import iris_ae_nets

ON_TF = keras.backend.backend() == "tensorflow"


def _np(t):
    return ops.convert_to_numpy(t)


GRID = list(itertools.product([None, 5.0], [1.0, 0.5], [0.0, 1e-5], [True, False]))


@pytest.mark.parametrize("threshold, w_model, w_recon, return_instance_score", GRID)
def test_reference_grid(iris, iris_model, threshold, w_model, w_recon, return_instance_score):
    """Port of alibi-detect's test_adversarialae grid."""
    X, _ = iris
    encoder_net, decoder_net = iris_ae_nets()
    ad = AdversarialAE(threshold=threshold, encoder_net=encoder_net, decoder_net=decoder_net, model=iris_model)
    assert ad.threshold == threshold
    assert ad.meta == {
        "name": "AdversarialAE",
        "detector_type": "adversarial",
        "data_type": None,
        "online": False,
        "version": ad.meta["version"],
    }
    for layer in ad.model.layers:
        assert not layer.trainable
    ad.fit(X, w_model=w_model, w_recon=w_recon, epochs=5, verbose=False)
    if threshold is None:
        assert ad.threshold is None
        with pytest.raises(ThresholdNotSetError, match="infer_threshold"):
            ad.predict(X)
    ad.infer_threshold(X, threshold_perc=90)
    under = np.mean(ad.score(X) <= ad.threshold)
    assert 0.89 <= under <= 0.91
    ad_preds = ad.predict(X, return_instance_score=return_instance_score)
    assert ad_preds["meta"] == ad.meta
    assert ad_preds["data"]["is_adversarial"].shape == (X.shape[0],)
    assert ad_preds["data"]["is_adversarial"].sum() == (ad.score(X) > ad.threshold).sum()
    if return_instance_score:
        assert ad_preds["data"]["instance_score"].shape == (X.shape[0],)
        assert (
            ad_preds["data"]["is_adversarial"].sum()
            == (ad_preds["data"]["instance_score"] > ad.threshold).astype(int).sum()
        )
    else:
        assert ad_preds["data"]["instance_score"] is None


def _np_kld(p, q):
    p = np.clip(p, 1e-7, 1.0)
    q = np.clip(q, 1e-7, 1.0)
    return np.sum(p * np.log(p / q), axis=-1)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("hidden", [False, True])
def test_score_matches_numpy_formulas(iris, iris_model, temperature, hidden):
    X, _ = iris
    encoder_net, decoder_net = iris_ae_nets()
    kwargs = {"hidden_layer_kld": {1: 4, 2: 3}, "w_model_hl": [0.3, 2.0]} if hidden else {}
    ad = AdversarialAE(
        encoder_net=encoder_net, decoder_net=decoder_net, model=iris_model, temperature=temperature, **kwargs
    )
    ad.fit(X, epochs=3, verbose=False)
    x_recon = ad.ae.predict(X, verbose=0)
    p = iris_model.predict(X, verbose=0).astype(np.float64)
    q = iris_model.predict(x_recon, verbose=0).astype(np.float64)
    p = p ** (1 / temperature)
    p = p / p.sum(-1, keepdims=True)
    expected = _np_kld(p, q)
    if hidden:
        assert len(ad.model_hl) == 2
        for m, w in zip(ad.model_hl, [0.3, 2.0], strict=True):
            expected += w * _np_kld(m.predict(X, verbose=0), m.predict(x_recon, verbose=0))
    score, p_out, q_out = ad.score(X, return_predictions=True)
    np.testing.assert_allclose(score, expected, atol=1e-5)
    np.testing.assert_allclose(p_out, p, atol=1e-6)
    np.testing.assert_allclose(q_out, q, atol=1e-6)


def test_training_loss_matches_numpy_formula(iris, iris_model):
    X, _ = iris
    X = X[:64]
    encoder_net, decoder_net = iris_ae_nets()
    ad = AdversarialAE(
        encoder_net=encoder_net,
        decoder_net=decoder_net,
        model=iris_model,
        hidden_layer_kld={1: 3},
        w_model_hl=[0.7],
        temperature=0.8,
    )
    x_pred = _np(ad.ae(X))
    loss = float(
        loss_adv_ae(
            ops.convert_to_tensor(X),
            ops.convert_to_tensor(x_pred),
            model=iris_model,
            model_hl=ad.model_hl,
            w_model=0.6,
            w_recon=0.2,
            w_model_hl=ad.w_model_hl,
            temperature=0.8,
        )
    )
    p = _np(iris_model(X)) ** (1 / 0.8)
    p /= p.sum(-1, keepdims=True)
    kl = _np_kld(p, _np(iris_model(x_pred)))
    hl = ad.model_hl[0]
    kl_h = _np_kld(_np(hl(X)), _np(hl(x_pred)))
    err = (X - x_pred) ** 2
    expected = 0.6 * (kl.mean() + 0.7 * kl_h.mean()) + 0.2 * (kl.std() / (err.std() + 1e-10)) * err.mean()
    assert loss == pytest.approx(expected, rel=1e-4)


def test_correct_fields_shapes_margin_and_batching(iris, iris_model):
    keras.utils.set_random_seed(5)
    X, _ = iris
    encoder_net, decoder_net = iris_ae_nets()
    ad = AdversarialAE(encoder_net=encoder_net, decoder_net=decoder_net, model=iris_model, data_type="tabular")
    ad.fit(X, epochs=5, verbose=False)
    thr = ad.infer_threshold(X, threshold_perc=80)
    scores = ad.score(X)
    assert thr == pytest.approx(float(np.percentile(scores, 80)))
    thr_m = ad.infer_threshold(X, threshold_perc=80, margin=0.25)
    assert thr_m == pytest.approx(thr + 0.25)
    ad.threshold = thr
    out = ad.correct(X)
    assert out["meta"]["data_type"] == "tabular"
    d = out["data"]
    assert set(d) == {"instance_score", "is_adversarial", "corrected", "no_defense", "defense"}
    for key in d:
        assert d[key].shape == (len(X),)
    _, p, q = ad.score(X, return_predictions=True)
    flagged = d["is_adversarial"].astype(bool)
    assert flagged.any() and not flagged.all()
    np.testing.assert_array_equal(d["no_defense"], p.argmax(-1))
    np.testing.assert_array_equal(d["defense"], q.argmax(-1))
    np.testing.assert_array_equal(d["corrected"], np.where(flagged, q.argmax(-1), p.argmax(-1)))
    np.testing.assert_array_equal(d["is_adversarial"], (d["instance_score"] > thr).astype(int))
    lean = ad.correct(X, return_instance_score=False, return_all_predictions=False)["data"]
    assert lean["instance_score"] is None and lean["no_defense"] is None and lean["defense"] is None
    np.testing.assert_array_equal(lean["corrected"], d["corrected"])
    # batch_size slicing: same answers whatever the chunking
    # (scores within the float32 bound of tests/answer_checks.py; flags and labels equal away from ties)
    for bs in (1, 7, 64):
        assert_same_answers(ad.correct(X, batch_size=bs)["data"], d, thr, p, q)
    empty = ad.correct(X[:0])["data"]
    assert empty["corrected"].shape == (0,)


def test_strict_threshold(iris, iris_model):
    X, _ = iris
    encoder_net, decoder_net = iris_ae_nets()
    ad = AdversarialAE(encoder_net=encoder_net, decoder_net=decoder_net, model=iris_model)
    s = ad.score(X[:10])
    ad.threshold = float(s[3])
    flags = ad.predict(X[:10])["data"]["is_adversarial"]
    assert flags[3] == 0  # score == threshold is not adversarial
    np.testing.assert_array_equal(flags, (s > s[3]).astype(int))


def test_fit_parameters_all_work(iris, iris_model, capsys):
    X, _ = iris
    encoder_net, decoder_net = iris_ae_nets()
    ad = AdversarialAE(encoder_net=encoder_net, decoder_net=decoder_net, model=iris_model, hidden_layer_kld={1: 3})
    before = [w.copy() for w in ad.model.get_weights()]
    hl_before = [w.copy() for w in ad.model_hl[0].get_weights()]
    seen_batches = []

    def preprocess_fn(x):
        seen_batches.append(len(x))
        return x * 1.0

    class Record(keras.callbacks.Callback):
        epochs: ClassVar[list[tuple[int, float]]] = []

        def on_epoch_end(self, epoch, logs=None):
            Record.epochs.append((epoch, logs["loss"]))

    def custom_loss(x_true, x_pred, **kwargs):
        return ops.mean(ops.square(x_true - x_pred)) * kwargs["w_model"]

    ad.fit(
        X,
        loss_fn=custom_loss,
        w_model=2.0,
        w_recon=0.1,
        optimizer=keras.optimizers.SGD,
        epochs=3,
        batch_size=50,
        verbose=True,
        log_metric=("mae", keras.metrics.MeanAbsoluteError()),
        callbacks=[Record()],
        preprocess_fn=preprocess_fn,
    )
    out = capsys.readouterr().out
    assert "Epoch 3/3" in out and "loss" in out and "mae" in out
    assert seen_batches == [50, 50, 50] * 3 + [50]  # 3 batches per epoch (+1 for building the AE)
    assert [e for e, _ in Record.epochs] == [0, 1, 2]
    assert len(ad.history) == 3 and ad.history[-1] < ad.history[0]
    for a, b in zip(before, ad.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # classifier frozen
    for a, b in zip(hl_before, ad.model_hl[0].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # hidden extractors frozen
    ad.fit(X, epochs=1, verbose=False)
    assert capsys.readouterr().out == ""


def test_early_stopping_callback_stops(iris, iris_model):
    X, _ = iris
    encoder_net, decoder_net = iris_ae_nets()
    ad = AdversarialAE(encoder_net=encoder_net, decoder_net=decoder_net, model=iris_model)
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e9)
    ad.fit(X, epochs=20, verbose=False, callbacks=stopper)
    assert len(ad.history) < 20


def test_model_hl_direct_and_weights(iris, iris_model):
    X, _ = iris
    encoder_net, decoder_net = iris_ae_nets()
    hl = keras.Model(iris_model.inputs, keras.layers.Dense(2, activation="softmax")(iris_model.layers[1].output))
    base = AdversarialAE(encoder_net=encoder_net, decoder_net=decoder_net, model=iris_model)
    with_hl = AdversarialAE(ae=base.ae, model=iris_model, model_hl=[hl], w_model_hl=[3.0])
    assert with_hl.w_model_hl == [3.0]
    diff = with_hl.score(X) - base.score(X)
    x_recon = base.ae.predict(X, verbose=0)
    np.testing.assert_allclose(diff, 3.0 * _np_kld(hl.predict(X, verbose=0), hl.predict(x_recon, verbose=0)), atol=1e-5)
    default_w = AdversarialAE(ae=base.ae, model=iris_model, model_hl=[hl])
    assert default_w.w_model_hl == [1.0]
    default_w.fit(X, epochs=1, verbose=False)  # float32 weights: no dtype clash in the loss
    with pytest.raises(ValueError, match="w_model_hl"):
        AdversarialAE(ae=base.ae, model=iris_model, model_hl=[hl], w_model_hl=[1.0, 2.0])


def test_constructor_errors(iris_model):
    with pytest.raises(TypeError, match="encoder_net"):
        AdversarialAE(model=iris_model)
    with pytest.raises(TypeError, match="model"):
        AdversarialAE(ae=keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)]))
    with pytest.raises(ValueError, match="temperature"):
        AdversarialAE(
            ae=keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)]), model=iris_model, temperature=0.0
        )


def test_seed_cifar_nets_and_dense_tabular_classifier():
    """The seed's CIFAR encoder/decoder examples work as given (with a small conv classifier)."""
    from adae_stream.detector.presets import cifar_decoder, cifar_encoder, dense_classifier, small_cnn

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 32, 32, 3)).astype(np.float32)
    ad = AdversarialAE(
        encoder_net=cifar_encoder(),
        decoder_net=cifar_decoder(),
        model=small_cnn((32, 32, 3), 10, width=8),
        temperature=0.5,
    )
    ad.fit(x, epochs=1, batch_size=8, verbose=False)
    assert ad.ae.losses  # the l1 regularisers of the seed nets are part of the loss
    ad.infer_threshold(x, 50)
    assert ad.correct(x)["data"]["corrected"].shape == (16,)
    xt = rng.normal(size=(32, 20)).astype(np.float32)
    from adae_stream.detector.presets import dense_ae

    ad2 = AdversarialAE(ae=dense_ae((20,), 8), model=dense_classifier(20, 3), threshold=0.1)
    ad2.fit(xt, epochs=1, verbose=False)
    assert ad2.predict(xt)["data"]["is_adversarial"].shape == (32,)


def test_digits_fgsm_detection_and_correction(digits_setup):
    """On real (offline) digits: FGSM adversarials score high and correction recovers accuracy."""
    from sklearn.metrics import roc_auc_score

    from adae_stream.detector.attacks import fgsm

    s = digits_setup
    det, clf, Xte, yte = s["detector"], s["clf"], s["Xte"], s["yte"]
    x_adv = fgsm(clf, Xte, yte, eps=0.15)
    clean, adv = det.score(Xte), det.score(x_adv)
    auroc = roc_auc_score(np.r_[np.zeros(len(clean)), np.ones(len(adv))], np.r_[clean, adv])
    assert auroc > 0.8, auroc
    out = det.correct(x_adv)["data"]
    attacked_acc = np.mean(out["no_defense"] == yte)
    corrected_acc = np.mean(out["corrected"] == yte)
    assert attacked_acc < 0.5
    assert corrected_acc > attacked_acc + 0.08, (attacked_acc, corrected_acc)
    clean_out = det.correct(Xte)["data"]
    assert np.mean(clean_out["corrected"] == yte) > 0.9  # correction costs little on clean data


def test_early_stopping_restores_the_best_validation_epoch(iris, iris_model):
    """fit's keyword-only extras: a validation loss per epoch, stop after `patience` epochs without a better one,
    and the best epoch's weights back in place (the seed's positional signature is unchanged)."""
    from adae_stream import AdversarialAE
    from tests.conftest import iris_ae_nets

    X, _ = iris
    keras.utils.set_random_seed(3)
    enc, dec = iris_ae_nets()
    det = AdversarialAE(encoder_net=enc, decoder_net=dec, model=iris_model)
    det.fit(
        X[:100],
        epochs=60,
        batch_size=16,
        verbose=False,
        optimizer=keras.optimizers.Adam(0.05),
        validation_data=X[100:],
        patience=3,
    )
    best = int(np.argmin(det.val_history))
    assert len(det.val_history) == len(det.history) <= 60
    assert len(det.val_history) == 60 or len(det.val_history) - 1 - best == 3  # stopped exactly `patience` epochs later
    x_val = ops.convert_to_tensor(X[100:], "float32")
    from adae_stream.detector.losses import loss_adv_ae

    restored = float(loss_adv_ae(x_val, det.ae(x_val), model=iris_model, w_model=1.0, w_recon=0.0))
    assert restored == pytest.approx(det.val_history[best], rel=1e-5)


@pytest.mark.skipif(not ON_TF, reason="alibi-detect's trainer loop is TensorFlow's GradientTape; runs on TF")
def test_fit_loss_curve_matches_alibi_detects_trainer_on_the_same_batches(iris, iris_model):
    """Issue 16's training parity: with the same initial weights and the same batches in the same order, fit's
    per-batch losses equal those of alibi-detect's trainer loop (eager GradientTape, model.losses added, Adam 1e-3,
    one step per batch), and each equals the loss formula computed in numpy from the weights before that step."""
    import tensorflow as tf

    from adae_stream import AdversarialAE
    from tests.conftest import iris_ae_nets

    X, _ = iris
    keras.utils.set_random_seed(11)
    enc, dec = iris_ae_nets()
    ours = AdversarialAE(encoder_net=enc, decoder_net=dec, model=iris_model, temperature=0.7)
    enc2, dec2 = iris_ae_nets()
    ref = AdversarialAE(encoder_net=enc2, decoder_net=dec2, model=iris_model, temperature=0.7)
    ref.ae(ops.convert_to_tensor(X[:2]))
    ours.ae(ops.convert_to_tensor(X[:2]))
    for a, b in zip(ref.ae.weights, ours.ae.weights, strict=True):
        a.assign(b)
    initial = [w.numpy().copy() for w in ours.ae.weights]
    epochs, batch_size, w_model, w_recon = 3, 32, 0.9, 0.1
    ours.fit(
        X,
        epochs=epochs,
        batch_size=batch_size,
        w_model=w_model,
        w_recon=w_recon,
        verbose=False,
        rng=np.random.default_rng(5),
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
    )

    # alibi-detect 0.13.0's trainer loop, fed the batches fit drew (same generator, same seed)
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    rng = np.random.default_rng(5)
    ref_losses, numpy_losses = [], []
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for i in range(0, len(X), batch_size):
            x = ops.convert_to_tensor(X[order[i : i + batch_size]])
            x_pred_np = _np(ref.ae(x))
            p = _np(iris_model(x)) ** (1 / 0.7)
            p /= p.sum(-1, keepdims=True)
            kl = _np_kld(p, _np(iris_model(x_pred_np)))
            err = (x.numpy() - x_pred_np) ** 2
            numpy_losses.append(w_model * kl.mean() + w_recon * (kl.std() / (err.std() + 1e-10)) * err.mean())
            with tf.GradientTape() as tape:
                y_hat = ref.ae(x)
                loss = loss_adv_ae(x, y_hat, model=iris_model, w_model=w_model, w_recon=w_recon, temperature=0.7)
                if ref.ae.losses:
                    loss += sum(ref.ae.losses)
            grads = tape.gradient(loss, ref.ae.trainable_weights)
            optimizer.apply_gradients(zip(grads, ref.ae.trainable_weights, strict=True))
            ref_losses.append(float(loss))
    assert len(ours.batch_history) == len(ref_losses) == epochs * int(np.ceil(len(X) / batch_size))
    np.testing.assert_allclose(ours.batch_history, ref_losses, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(ref_losses, numpy_losses, rtol=2e-4, atol=1e-7)
    # the steps moved the weights
    assert any(not np.allclose(w0, w.numpy()) for w0, w in zip(initial, ours.ae.weights, strict=True))
    for a, b in zip(ref.ae.weights, ours.ae.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
