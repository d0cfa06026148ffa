"""Detector identity: content hashes, so two different detectors never look the same in an answer.

``detector_version`` is the library's version; the ids below name the detector itself. The detector id
hashes everything that decides a score or a flag: the AE's and classifier's weights, the hidden-layer
extractors and their weights, the threshold, the temperature and the scoring precision. The same
detector saved twice keeps its id; any change gives a new one. The classifier id names the classifier's
weights alone, so answers can be grouped by the model they protect.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from adae_stream.scoring import ScorerInfo

ID_LENGTH = 16  # hex digits (64 bits): enough to tell detectors apart, short enough for a metric label


def weights_digest(model: Any) -> str:
    """sha256 over every weight's dtype, shape and bytes, in the model's own order."""
    digest = hashlib.sha256()
    for weight in model.weights:
        array = np.ascontiguousarray(np.asarray(weight))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def detector_identity(detector: Any) -> dict[str, str]:
    classifier = weights_digest(detector.model)
    parts = {
        "ae": weights_digest(detector.ae),
        "classifier": classifier,
        "hidden": [weights_digest(m) for m in detector.model_hl or []],
        "hidden_layer_kld": {str(k): v for k, v in (detector.hidden_layer_kld or {}).items()},
        "w_model_hl": detector.w_model_hl,
        "threshold": None if detector.threshold is None else float(np.float32(detector.threshold)),
        "temperature": float(detector.temperature),
        "precision": detector.precision,
    }
    detector_id = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return {"detector_id": detector_id[:ID_LENGTH], "classifier_id": classifier[:ID_LENGTH]}


def scorer_info(detector: Any) -> ScorerInfo:
    """What the stream is told about a thresholded detector: its shapes, threshold, ids and drift reference."""
    identity = detector_identity(detector)
    return ScorerInfo(
        input_shape=detector.input_shape,
        threshold=detector.threshold,
        n_classes=detector.n_classes,
        version=detector.meta["version"],
        detector_id=identity["detector_id"],
        classifier_id=identity["classifier_id"],
        reference_scores=detector.reference_scores,
    )
