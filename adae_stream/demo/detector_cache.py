"""The demo detector: trained on offline digits, or loaded from a cache keyed by code version and config.

A cache entry that fails to load (corrupt, partial, older format) is removed and rebuilt, never crashed on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from adae_stream.version import __version__

log = logging.getLogger(__name__)


def cache_key(epochs: int, seed: int) -> str:
    spec = {
        "version": __version__,
        "epochs": epochs,
        "seed": seed,
        "recipe": "digits-cnn16-convae-fpr05-heldout-card-v3",
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def train_demo_detector(epochs: int, seed: int):
    """The digits detector, calibrated to a 5 % false-positive rate on held-out digits, with its card's
    figures in meta (returned with the data the card needs)."""
    import keras

    from adae_stream import AdversarialAE
    from adae_stream.demo.data import load_digits_split
    from adae_stream.detector.presets import conv_ae, small_cnn

    keras.utils.set_random_seed(seed)
    Xtr, ytr, _, _ = load_digits_split(seed)
    clf = small_cnn((8, 8, 1), 10, width=16)
    clf.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    clf.fit(Xtr, ytr, epochs=15, batch_size=64, verbose=0)
    # the threshold comes from held-out data: scores on the AE's own training data run low
    n_fit = int(len(Xtr) * 0.8)
    det = AdversarialAE(ae=conv_ae((8, 8, 1)), model=clf, data_type="image")
    det.fit(Xtr[:n_fit], epochs=epochs, batch_size=64, verbose=False, rng=np.random.default_rng(seed))
    det.calibrate_threshold(Xtr[n_fit:], target_fpr=0.05)
    from adae_stream.detector.card import evaluate
    from adae_stream.detector.identity import detector_identity

    det.meta["card"] = evaluate(det, Xtr[n_fit:], ytr[n_fit:], seed)
    det.meta["identity"] = detector_identity(det)
    return det, det.score(Xtr[:n_fit]), det.score(Xtr[n_fit:])


def load_or_train(cache_dir: str | Path, epochs: int, seed: int):
    """Returns (detector, path of the saved detector, whether it came from the cache)."""
    from adae_stream.detector.saving import load_detector, save_detector
    from adae_stream.errors import DetectorLoadError

    path = Path(cache_dir) / f"digits-{cache_key(epochs, seed)}"
    if path.exists():
        try:
            return load_detector(path), path, True
        except DetectorLoadError as exc:
            log.warning("demo cache %s unusable (%s): rebuilding it", path, exc)
            shutil.rmtree(path, ignore_errors=True)
    from adae_stream.detector.card import write_card

    log.info("training the demo detector on scikit-learn digits (%d AE epochs)...", epochs)
    det, train_scores, held_out_scores = train_demo_detector(epochs, seed)
    save_detector(det, path)
    write_card(path, det, det.meta["card"], train_scores, held_out_scores)
    return det, path, False


def traffic_pools(detector, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Instances and true labels per traffic kind, from the held-out digits."""
    from adae_stream.demo.data import load_digits_split
    from adae_stream.detector import attacks

    _, _, Xte, yte = load_digits_split(seed)
    clf = detector.model
    return {
        "clean": (Xte, yte),
        "fgsm": (attacks.fgsm(clf, Xte, yte, eps=0.15), yte),
        "pgd": (attacks.pgd(clf, Xte, yte, eps=0.15, alpha=0.03, steps=10, seed=seed), yte),
        "noise": (attacks.gaussian_noise(Xte, sigma=0.3, seed=seed), yte),
        "blur": (attacks.blur(Xte), yte),
        "occlusion": (attacks.occlusion(Xte, size=4, seed=seed), yte),
    }
