"""Who answered, as the codecs take it (model name and version, then codecs.tensors.ANSWER_PARAMETERS),
for tests that encode answers without a detector."""

from __future__ import annotations

ANSWER_INFO = {
    "model_name": "m",
    "model_version": "3",
    "threshold": 0.5,
    "detector_version": "v",
    "detector_id": "d1",
    "classifier_id": "c1",
    "prediction": "corrected",
}
