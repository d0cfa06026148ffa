"""Keras-3-native saving, kept apart from the method: a directory of .keras models plus detector.json.

Layout::

    DIR/detector.json        config, threshold, meta, reference scores, versions, backend
    DIR/model.keras          the classifier (a Keras one), or
    DIR/model.pt2 | model.ts a PyTorch classifier, in the format it was loaded from (format_version 2)
    DIR/ae.keras             the auto-encoder (portable: loads under TF, JAX and torch)
    DIR/model_hl_<i>.keras   hidden-layer models, if any

A detector with a Keras classifier loads under any backend (the .keras files are backend-neutral);
one with a PyTorch classifier loads on the torch backend only. Detectors with Keras classifiers keep
format_version 1, so earlier adae-stream versions still read them.

Saving writes to a sibling temp dir and renames it into place, so a crash never leaves half a detector.
Loading uses Keras safe_mode (no arbitrary code from a model file) and turns every failure into one
DetectorLoadError that names the file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from adae_stream.detector import classifier
from adae_stream.detector.adversarial_ae import AdversarialAE
from adae_stream.detector.backend import current, engine
from adae_stream.detector.identity import detector_identity
from adae_stream.detector.keras_compat import custom_objects
from adae_stream.errors import DetectorLoadError
from adae_stream.version import __version__

FORMAT_VERSION = 2  # 2: a PyTorch classifier ("classifier" in detector.json); 1: a Keras one
CONFIG_FILE = "detector.json"


def _save_classifier(model: Any, directory: Path) -> dict | None:
    """Keras: model.keras (None: format 1). PyTorch: its own file, described for the loader."""
    if classifier.is_keras(model):
        model.save(directory / "model.keras")
        return None
    return {"format": "torch", "file": model.save(directory), "outputs": model.outputs}


def save_detector(detector: AdversarialAE, path: str | os.PathLike) -> Path:
    if not isinstance(detector, AdversarialAE):
        raise TypeError(f"save_detector expects an AdversarialAE, got {type(detector).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        described = _save_classifier(detector.model, tmp)
        detector.ae.save(tmp / "ae.keras")
        for i, m in enumerate(detector.model_hl or []):
            m.save(tmp / f"model_hl_{i}.keras")
        config = {
            "format_version": 1 if described is None else 2,
            "adae_stream_version": __version__,
            "keras_version": keras.__version__,
            "backend": current(),  # what trained it; it serves on any backend its classifier allows
            "runtime": engine().runtime(),
            "classifier": described,
            **detector_identity(detector),  # detector_id, classifier_id: content hashes (detector/identity.py)
            "threshold": detector.threshold,
            "temperature": detector.temperature,
            "precision": detector.precision,
            "w_model_hl": detector.w_model_hl,
            "n_model_hl": len(detector.model_hl or []),
            "hidden_layer_kld": {str(k): v for k, v in (detector.hidden_layer_kld or {}).items()} or None,
            "input_shape": list(detector.input_shape),
            "n_classes": detector.n_classes,
            "meta": detector.meta,
            "reference_scores": None
            if detector.reference_scores is None
            else [float(s) for s in detector.reference_scores],
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_detector_config(path: str | os.PathLike) -> dict:
    """Parse and check detector.json without touching the models (cheap; used at start-up and for caches)."""
    cfg_path = Path(path) / CONFIG_FILE
    if not cfg_path.is_file():
        raise DetectorLoadError(
            f"no saved detector at {path}: {cfg_path.name} is missing (use save_detector / adae-stream train)"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DetectorLoadError(f"corrupt {cfg_path}: {exc}") from exc
    if not isinstance(config, dict) or "format_version" not in config:
        raise DetectorLoadError(f"{cfg_path} is not an adae-stream detector config")
    if not isinstance(config["format_version"], int) or config["format_version"] > FORMAT_VERSION:
        raise DetectorLoadError(
            f"{cfg_path} has format_version {config['format_version']!r}; this adae-stream ({__version__}) "
            f"reads up to {FORMAT_VERSION}: upgrade adae-stream or re-save the detector"
        )
    return config


def _load_model(file: Path) -> keras.Model:
    if not file.is_file():
        raise DetectorLoadError(f"saved detector is incomplete: {file} is missing")
    try:
        return keras.models.load_model(file, custom_objects=custom_objects(), compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for corrupt or unsafe files; name the file once
        raise DetectorLoadError(f"cannot load {file}: {type(exc).__name__}: {exc}") from exc


def _build(config: dict, model, ae, model_hl, meta: dict) -> AdversarialAE:
    return AdversarialAE(
        threshold=config.get("threshold"),
        ae=ae,
        model=model,
        model_hl=model_hl or None,
        w_model_hl=config.get("w_model_hl"),
        temperature=config.get("temperature", 1.0),
        data_type=meta.get("data_type"),
        precision=config.get("precision", "float32"),
    )


def _load_classifier(path: Path, config: dict, allow_torchscript: bool) -> Any:
    described = config.get("classifier")
    if not described:
        return _load_model(path / "model.keras")
    if not isinstance(described, dict) or described.get("format") != "torch" or "file" not in described:
        raise DetectorLoadError(f"{path / CONFIG_FILE}: unknown classifier description {described!r}")
    if current() != "torch":
        raise DetectorLoadError(
            f"{path} protects a PyTorch classifier: serve it on the torch backend (KERAS_BACKEND=torch or "
            f"detector.backend: torch), not {current()!r}"
        )
    from adae_stream.detector.torch_classifier import load_torch_classifier

    file = path / Path(str(described["file"])).name  # a name inside the detector, never a path out of it
    if not file.is_file():
        raise DetectorLoadError(f"saved detector is incomplete: {file} is missing")
    shape = tuple(int(d) for d in config.get("input_shape") or ())
    return load_torch_classifier(file, shape or None, str(described.get("outputs", "probabilities")), allow_torchscript)


def load_detector(path: str | os.PathLike, allow_torchscript: bool = False) -> AdversarialAE:
    """``allow_torchscript``: the detector's classifier may be TorchScript, which runs its own code."""
    path = Path(path)
    config = read_detector_config(path)
    model = _load_classifier(path, config, allow_torchscript)
    ae = _load_model(path / "ae.keras")
    model_hl = [_load_model(path / f"model_hl_{i}.keras") for i in range(int(config.get("n_model_hl") or 0))]
    meta = config.get("meta") or {}
    try:
        detector = _build(config, model, ae, model_hl, meta)
    except (TypeError, ValueError) as exc:
        raise DetectorLoadError(f"{path / CONFIG_FILE} does not describe a valid detector: {exc}") from exc
    hl = config.get("hidden_layer_kld")
    detector.hidden_layer_kld = {int(k): int(v) for k, v in hl.items()} if hl else None
    detector.meta.update({k: v for k, v in meta.items() if k != "version"})
    if config.get("reference_scores") is not None:
        detector.reference_scores = np.asarray(config["reference_scores"], dtype=np.float32)
    return detector
