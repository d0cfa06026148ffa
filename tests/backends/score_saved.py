"""Run in another backend's environment: load a saved detector, answer for the instances in an .npz, and
write what it gave (and the detector saved again from there) for the calling TF process to compare.

Usage: KERAS_BACKEND=jax python -m tests.backends.score_saved DETECTOR IN.npz OUT.npz RESAVE_DIR"""

from __future__ import annotations

import sys

import numpy as np


def main(detector_path: str, inputs: str, output: str, resave: str) -> None:
    import keras

    from adae_stream import load_detector, save_detector
    from adae_stream.detector.identity import detector_identity

    det = load_detector(detector_path)
    x = np.load(inputs)["x"]
    out = det.correct(x)["data"]
    _, p, q = det.score(x, return_predictions=True)
    save_detector(det, resave)
    np.savez(
        output,
        p=p,
        q=q,
        backend=keras.backend.backend(),
        tensorflow_imported="tensorflow" in sys.modules,
        detector_id=detector_identity(det)["detector_id"],
        **{k: v for k, v in out.items() if v is not None},
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
