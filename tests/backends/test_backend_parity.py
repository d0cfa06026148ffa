"""Detectors move between backends: detectors with Keras classifiers saved under TensorFlow answer under
JAX and PyTorch (each in its own environment, .venv-jax and .venv-torch, built by `make test`) within the
float32 bound of tests/answer_checks.py, keep their detector_id, and come back to TensorFlow from there.
A detector protecting a PyTorch classifier is refused under TensorFlow with the reason."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from adae_stream import AdversarialAE, load_detector, save_detector
from adae_stream.detector.identity import detector_identity
from adae_stream.errors import DetectorLoadError
from tests.answer_checks import assert_same_answers
from tests.conftest import iris_ae_nets
from tests.process_helpers import ROOT

pytestmark = pytest.mark.slow
ENVIRONMENTS = {"jax": ROOT / ".venv-jax", "torch": ROOT / ".venv-torch"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory, iris, iris_model, digits_setup, digits_detector_path):
    X, _ = iris
    enc, dec = iris_ae_nets()
    det = AdversarialAE(encoder_net=enc, decoder_net=dec, model=iris_model, temperature=0.8)  # tf.nn.softmax
    det.fit(X, epochs=5, verbose=False)
    det.infer_threshold(X, threshold_perc=80)
    iris_path = save_detector(det, tmp_path_factory.mktemp("iris") / "det")
    rng = np.random.default_rng(0)
    digits_x = digits_setup["Xte"][:200]
    noisy = np.clip(digits_x + rng.normal(0, 0.4, digits_x.shape), 0, 1).astype(np.float32)
    return {"iris": (iris_path, X), "digits": (digits_detector_path, np.concatenate([digits_x, noisy]))}


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("which", ["iris", "digits"])
def test_a_tf_saved_detector_answers_the_same_under_another_backend(saved, tmp_path, backend, which):
    python = ENVIRONMENTS[backend] / "bin" / "python"
    assert python.exists(), f"{python} is missing: `make test` builds it (Makefile, .venv-{backend}/.installed)"
    path, x = saved[which]
    np.savez(tmp_path / "in.npz", x=x)
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [str(python), "-m", "tests.backends.score_saved", str(path), str(tmp_path / "in.npz"),
         str(tmp_path / "out.npz"), str(tmp_path / "resaved")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    assert str(got["backend"]) == backend and not bool(got["tensorflow_imported"])
    tf_det = load_detector(path)
    reference = tf_det.correct(x)["data"]
    _, p, q = tf_det.score(x, return_predictions=True)
    assert_same_answers(dict(got), reference, float(tf_det.threshold), p, q)
    assert str(got["detector_id"]) == detector_identity(tf_det)["detector_id"]
    # and back: saved again under the other backend, it loads under TF with the same identity
    resaved = json.loads((tmp_path / "resaved" / "detector.json").read_text())
    assert resaved["backend"] == backend and resaved["format_version"] == 1
    back = load_detector(tmp_path / "resaved")
    assert detector_identity(back) == detector_identity(tf_det)
    np.testing.assert_array_equal(back.score(x), tf_det.score(x))


def test_a_pytorch_classifier_detector_is_refused_under_tensorflow_with_the_reason(saved, tmp_path):
    path, _ = saved["iris"]
    target = save_detector(load_detector(path), tmp_path / "torchdet")
    config = json.loads((target / "detector.json").read_text())
    config.update(format_version=2, classifier={"format": "torch", "file": "model.pt2", "outputs": "probabilities"})
    (target / "detector.json").write_text(json.dumps(config))
    with pytest.raises(DetectorLoadError, match="torch backend"):
        load_detector(target)
