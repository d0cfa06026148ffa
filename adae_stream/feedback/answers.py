"""What the join keeps of an answer, and of a shadow version's scoring of the same request, as read back from
the output topic and the shadow topic; and the paired evidence a label gives on them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from adae_stream.feedback.evidence import Counts, PairedEvidence
from adae_stream.feedback.outcome import PREDICTIONS
from adae_stream.scoring import IS_ADVERSARIAL


@dataclass
class Scored:
    """One version's predictions and flags for a request's instances."""

    detector: str
    version: str
    role: str  # "serving" (the answer) | "shadow"
    no_defense: np.ndarray
    defense: np.ndarray
    corrected: np.ndarray
    is_adversarial: np.ndarray

    @classmethod
    def of(cls, detector: str, version: str, role: str, fields: dict[str, np.ndarray]) -> Scored:
        return cls(detector, version, role, *(np.asarray(fields[k]) for k in (*PREDICTIONS, IS_ADVERSARIAL)))

    def judged(self, new: np.ndarray, y: np.ndarray) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        """Correct predictions per defense, and (flag, undefended) counts, on the newly labelled instances."""
        correct = {p: int((getattr(self, p)[new] == y).sum()) for p in PREDICTIONS}
        undefended_wrong = self.no_defense[new] != y
        flagged = self.is_adversarial[new].astype(bool)
        confusion = {}
        for flag_name, flag_mask in (("flagged", flagged), ("unflagged", ~flagged)):
            for outcome_name, mask in (("wrong", undefended_wrong), ("correct", ~undefended_wrong)):
                confusion[(flag_name, outcome_name)] = int((flag_mask & mask).sum())
        return correct, confusion


@dataclass
class Answer:
    """What the service answered for one request, as the join needs it (and its shadow's scoring).
    ``labelled`` marks the instances a label has judged: committed, or in a checkpoint still open
    (journal.py rolls those back with it)."""

    timestamp_s: float
    serving: Scored
    shadow: Scored | None = None
    labelled: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.labelled = np.zeros(len(self.serving.corrected), dtype=bool)

    @property
    def n(self) -> int:
        return len(self.serving.corrected)


def paired(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> tuple[int, int, int]:
    """(only b right, only a right, both right or both wrong) over labelled instances."""
    a_right, b_right = a == y, b == y
    return int((b_right & ~a_right).sum()), int((a_right & ~b_right).sum()), int((a_right == b_right).sum())


def evidence(answer: Answer, new: np.ndarray, y: np.ndarray) -> list[PairedEvidence]:
    """The paired counts the decisions take, from what each option *would* publish: every answer holds
    both the corrected and the undefended prediction, whichever is published (README, "Decisions")."""
    serving = answer.serving
    if not serving.detector:  # an answer read back without its detector's name: no series to count under
        return []
    version = serving.version
    out = [
        PairedEvidence(
            "defense",
            serving.detector,
            version,
            version,
            Counts(*paired(serving.no_defense[new], serving.corrected[new], y)),
        )
    ]
    if answer.shadow is not None:
        clean = ~serving.is_adversarial[new].astype(bool)
        b, c, m = paired(serving.corrected[new], answer.shadow.corrected[new], y)
        flagged_clean = int((answer.shadow.is_adversarial[new].astype(bool) & clean).sum())
        counts = Counts(b, c, m, a_clean=int(clean.sum()), b_flagged_clean=flagged_clean)
        out.append(PairedEvidence("versions", serving.detector, version, answer.shadow.version, counts))
    return out


def encode_shadow(request_id: str, detector: str, version: str, fields: dict[str, np.ndarray]) -> bytes:
    """A shadow topic record: a shadow version's predictions and flags for one request's instances."""
    body = {"id": request_id, "detector": detector, "version": version}
    body.update({k: np.asarray(fields[k]).astype(int).tolist() for k in (*PREDICTIONS, IS_ADVERSARIAL)})
    return json.dumps(body, separators=(",", ":")).encode()


def decode_shadow(value: bytes | None) -> tuple[str, str, str, dict[str, np.ndarray]]:
    body = json.loads(value or b"")
    fields = {k: np.asarray(body[k], np.int64) for k in PREDICTIONS}
    fields[IS_ADVERSARIAL] = np.asarray(body[IS_ADVERSARIAL], bool)
    return str(body["id"]), str(body["detector"]), str(body["version"]), fields
