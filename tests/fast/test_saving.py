"""Keras-3-native save/load: exact round trips and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adae_stream import AdversarialAE, load_detector, save_detector
from adae_stream.errors import DetectorLoadError
from tests.conftest import iris_ae_nets


@pytest.mark.parametrize("kind", ["plain", "temperature", "hidden", "bfloat16"])
def test_round_trip_exact(tmp_path, iris, iris_model, kind):
    X, _ = iris
    enc, dec = iris_ae_nets()
    kwargs = {
        "temperature": {"temperature": 0.4},
        "hidden": {"hidden_layer_kld": {1: 3}, "w_model_hl": [0.5]},
        "bfloat16": {"precision": "mixed_bfloat16"},
    }.get(kind, {})
    ad = AdversarialAE(encoder_net=enc, decoder_net=dec, model=iris_model, data_type="tabular", **kwargs)
    ad.fit(X, epochs=2, verbose=False)
    ad.infer_threshold(X, 90)
    save_detector(ad, tmp_path / "det")
    loaded = load_detector(tmp_path / "det")
    assert isinstance(loaded, AdversarialAE)
    assert loaded.threshold == ad.threshold
    assert loaded.temperature == ad.temperature
    assert loaded.precision == ad.precision
    assert loaded.meta == ad.meta
    assert loaded.w_model_hl == ad.w_model_hl
    assert loaded.hidden_layer_kld == ad.hidden_layer_kld
    np.testing.assert_array_equal(loaded.reference_scores, ad.reference_scores)
    assert np.abs(loaded.score(X) - ad.score(X)).max() == 0.0
    a, b = ad.correct(X)["data"], loaded.correct(X)["data"]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # saving over an existing detector replaces it atomically
    save_detector(loaded, tmp_path / "det")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det"]


@pytest.fixture
def saved(tmp_path, iris, iris_model):
    enc, dec = iris_ae_nets()
    ad = AdversarialAE(encoder_net=enc, decoder_net=dec, model=iris_model, threshold=0.1)
    return save_detector(ad, tmp_path / "det")


def test_missing_dir_or_config(tmp_path):
    with pytest.raises(DetectorLoadError, match=r"detector\.json is missing"):
        load_detector(tmp_path / "nope")


def test_missing_model_file(saved):
    (saved / "ae.keras").unlink()
    with pytest.raises(DetectorLoadError, match=r"ae\.keras is missing"):
        load_detector(saved)


def test_corrupt_model_file(saved):
    (saved / "model.keras").write_bytes(b"not a zip at all")
    with pytest.raises(DetectorLoadError, match=r"cannot load .*model\.keras"):
        load_detector(saved)


def test_corrupt_config(saved):
    (saved / "detector.json").write_text("{broken")
    with pytest.raises(DetectorLoadError, match="corrupt"):
        load_detector(saved)


def test_future_format_version(saved):
    cfg = json.loads((saved / "detector.json").read_text())
    cfg["format_version"] = 99
    (saved / "detector.json").write_text(json.dumps(cfg))
    with pytest.raises(DetectorLoadError, match="format_version 99"):
        load_detector(saved)


def test_unknown_precision_in_config(saved):
    cfg = json.loads((saved / "detector.json").read_text())
    cfg["precision"] = "float8"
    (saved / "detector.json").write_text(json.dumps(cfg))
    with pytest.raises(
        DetectorLoadError, match=r"detector\.json does not describe a valid detector: precision must be one of"
    ):
        load_detector(saved)


def test_safe_mode_refuses_lambda_layers(tmp_path, iris_model):
    """A model file carrying Python code (a Lambda layer) is refused, not executed."""
    import tensorflow as tf

    ae = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Lambda(lambda x: x * 2.0)])
    ad = AdversarialAE(ae=ae, model=iris_model, threshold=0.1)
    path = save_detector(ad, tmp_path / "lambda")
    with pytest.raises(DetectorLoadError, match=r"ae\.keras"):
        load_detector(path)


def test_detector_identity_is_a_content_hash(digits_setup, tmp_path):
    """The same detector saved twice keeps its id; a changed threshold, temperature or AE weight gives a new one;
    the classifier id follows the classifier alone. Every answer carries the id (see test_pipeline_e2e)."""
    import json

    from adae_stream import load_detector, save_detector
    from adae_stream.detector.identity import detector_identity

    det = digits_setup["detector"]
    first = json.loads((save_detector(det, tmp_path / "a") / "detector.json").read_text())
    second = json.loads((save_detector(det, tmp_path / "b") / "detector.json").read_text())
    assert first["detector_id"] == second["detector_id"] and len(first["detector_id"]) == 16
    assert detector_identity(load_detector(tmp_path / "a")) == {
        "detector_id": first["detector_id"],
        "classifier_id": first["classifier_id"],
    }
    original = det.threshold
    try:
        det.threshold = original * 1.01
        assert detector_identity(det)["detector_id"] != first["detector_id"]
        assert detector_identity(det)["classifier_id"] == first["classifier_id"]
    finally:
        det.threshold = original
    other = load_detector(tmp_path / "a")
    other.temperature = 0.5
    assert detector_identity(other)["detector_id"] != first["detector_id"]
    weight = other.ae.trainable_variables[0]
    other.temperature = det.temperature
    weight.assign(weight + 1e-3)
    assert detector_identity(other)["detector_id"] != first["detector_id"]
    assert detector_identity(other)["classifier_id"] == first["classifier_id"]
