"""A PyTorch classifier under the detector (torch backend): frozen, scored by the method's formula, saved
and loaded in its own format, and every unsafe or ambiguous file refused. Runs in .venv-torch
(`make test`), a process that never imports TensorFlow."""

from __future__ import annotations

import io
import json
import pickle
import sys
import zipfile

import numpy as np
import pytest
import torch

from adae_stream import AdversarialAE, load_detector, save_detector
from adae_stream.detector.identity import detector_identity
from adae_stream.detector.presets import conv_ae, dense_ae
from adae_stream.detector.torch_classifier import load_torch_classifier
from adae_stream.errors import DetectorLoadError
from tests.torch_models import INPUT_SHAPE, export


def _np_kld(p, q):
    p, q = np.clip(p, 1e-7, 1.0), np.clip(q, 1e-7, 1.0)
    return np.sum(p * np.log(p / q), axis=-1)


def _state(module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def _fitted(clf, x, epochs=4, preset=dense_ae):
    det = AdversarialAE(ae=preset(INPUT_SHAPE), model=clf, data_type="image")
    det.fit(x, epochs=epochs, batch_size=64, verbose=False)
    det.infer_threshold(x, threshold_perc=95)
    return det


def test_torch_process_runs_without_tensorflow():
    assert "tensorflow" not in sys.modules


def test_exported_classifier_stays_frozen_while_the_ae_trains(digits_torch, pt2_path):
    x = digits_torch["x"]
    clf = load_torch_classifier(pt2_path)
    assert clf.input_shape == INPUT_SHAPE and clf.n_classes == 10
    before = _state(clf.module)
    assert any("running_mean" in k for k in before)  # BatchNorm buffers are there to move, if anything moved them
    det = _fitted(clf, x)
    assert det.history[-1] < det.history[0]  # the AE learned
    after = _state(clf.module)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert not any(p.requires_grad for p in clf.module.parameters())


def test_scores_are_the_methods_formula_on_the_torch_classifier(digits_torch, pt2_path):
    x = digits_torch["x"][:300]
    clf = load_torch_classifier(pt2_path)
    det = _fitted(clf, x, epochs=2, preset=lambda s: conv_ae(s, channels_first=True))
    with torch.no_grad():
        p = digits_torch["cnn"](torch.as_tensor(x)).numpy().astype(np.float64)
        x_recon = np.asarray(det.ae.predict(x, verbose=0))
        q = digits_torch["cnn"](torch.as_tensor(x_recon)).numpy().astype(np.float64)
    score, p_out, q_out = det.score(x, return_predictions=True)
    np.testing.assert_allclose(score, _np_kld(p, q), atol=1e-5)
    np.testing.assert_allclose(p_out, p, atol=1e-6)
    out = det.correct(x)["data"]
    flagged = out["is_adversarial"].astype(bool)
    np.testing.assert_array_equal(flagged, score > det.threshold)
    np.testing.assert_array_equal(out["corrected"], np.where(flagged, q_out.argmax(-1), p_out.argmax(-1)))


def test_logits_are_turned_into_probabilities_when_declared(digits_torch, tmp_path):
    path = export(digits_torch["cnn_logits"], tmp_path / "logits.pt2")
    with pytest.raises(DetectorLoadError, match="declare them as logits"):
        load_torch_classifier(path)
    clf = load_torch_classifier(path, outputs="logits")
    with torch.no_grad():
        expected = torch.softmax(digits_torch["cnn_logits"](torch.as_tensor(digits_torch["x"][:20])), -1).numpy()
        got = clf(torch.as_tensor(digits_torch["x"][:20])).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_save_and_load_keep_scores_identity_and_format(digits_torch, pt2_path, tmp_path):
    x = digits_torch["x"][:200]
    det = _fitted(load_torch_classifier(pt2_path), x, epochs=2)
    path = save_detector(det, tmp_path / "det")
    config = json.loads((path / "detector.json").read_text())
    assert sorted(p.name for p in path.iterdir()) == ["ae.keras", "detector.json", "model.pt2"]
    assert config["format_version"] == 2 and config["backend"] == "torch"
    assert config["classifier"] == {"format": "torch", "file": "model.pt2", "outputs": "probabilities"}
    assert config["runtime"].startswith("torch ")
    loaded = load_detector(path)
    np.testing.assert_array_equal(loaded.score(x), det.score(x))
    assert detector_identity(loaded) == detector_identity(det)
    assert loaded.input_shape == INPUT_SHAPE
    info = loaded.stream_scorer().info
    assert info.runtime.startswith("torch ") and info.detector_id == detector_identity(det)["detector_id"]


def test_torchscript_needs_an_explicit_opt_in(digits_torch, tmp_path):
    path = tmp_path / "clf.ts"
    torch.jit.script(digits_torch["cnn"].eval()).save(path)
    with pytest.raises(DetectorLoadError, match="allow-torchscript"):
        load_torch_classifier(path, INPUT_SHAPE)
    clf = load_torch_classifier(path, INPUT_SHAPE, allow_torchscript=True)
    before = _state(clf.module)
    det = _fitted(clf, digits_torch["x"][:200], epochs=2)
    assert not clf.module.training
    for k, v in _state(clf.module).items():
        np.testing.assert_array_equal(before[k], v, err_msg=k)
    saved = save_detector(det, tmp_path / "det")
    assert (saved / "model.ts").is_file()
    with pytest.raises(DetectorLoadError, match="allow-torchscript"):
        load_detector(saved)
    np.testing.assert_array_equal(
        load_detector(saved, allow_torchscript=True).score(digits_torch["x"][:50]), det.score(digits_torch["x"][:50])
    )


def test_a_classifier_exported_in_train_mode_is_refused(digits_torch, tmp_path):
    path = export(digits_torch["cnn"], tmp_path / "train.pt2", train_mode=True)
    with pytest.raises(DetectorLoadError, match="not frozen"):
        load_torch_classifier(path)


def test_a_pickled_module_is_refused(digits_torch, tmp_path):
    path = tmp_path / "clf.pth"
    torch.save(digits_torch["cnn"], path)
    with pytest.raises(DetectorLoadError, match="pickled Python object"):
        load_torch_classifier(path, INPUT_SHAPE)


class _Payload:
    """Unpickling this runs code: it writes a marker file (what a hostile .pt2 part could do instead)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pt2_whose_parts_need_code_to_unpickle_is_refused_before_any_runs(pt2_path, tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pt2"
    with zipfile.ZipFile(pt2_path) as src, zipfile.ZipFile(hostile, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("sample_inputs/model.pt"):
                buffer = io.BytesIO()
                torch.save(_Payload(str(marker)), buffer, pickle_protocol=pickle.HIGHEST_PROTOCOL)
                data = buffer.getvalue()
            dst.writestr(item, data)
    with pytest.raises(DetectorLoadError, match="needs code to unpickle"):
        load_torch_classifier(hostile)
    assert not marker.exists()


def test_what_a_torch_classifier_cannot_do_is_refused_at_construction(pt2_path):
    clf = load_torch_classifier(pt2_path)
    with pytest.raises(ValueError, match="Keras"):
        AdversarialAE(ae=dense_ae(INPUT_SHAPE), model=clf, hidden_layer_kld={1: 4})
    with pytest.raises(ValueError, match="float32"):
        AdversarialAE(ae=dense_ae(INPUT_SHAPE), model=clf, precision="mixed_bfloat16")
    with pytest.raises(TypeError, match="TorchClassifier"):
        AdversarialAE(ae=dense_ae(INPUT_SHAPE), model=torch.nn.Linear(4, 3))
