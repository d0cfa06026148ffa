"""What became of a feedback record, with the counts it adds: what the join decides and the metrics count
(adae_stream/stream/telemetry.py's contract takes it; monitoring/feedback_metrics.py exports it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from adae_stream.feedback.evidence import PairedEvidence
from adae_stream.scoring import CORRECTED, DEFENSE, NO_DEFENSE

# The predictions the feedback loop judges (the `prediction` label of adae_feedback_correct_total).
PREDICTIONS = (NO_DEFENSE, DEFENSE, CORRECTED)
# What became of a feedback record (the `result` label of adae_feedback_records_total).
FEEDBACK_RESULTS = ("joined", "duplicate", "unknown", "late", "unplaced", "dead_letter")
# Why a label was not placed although its answer may exist (the `reason` label of adae_feedback_unplaced_total):
# its answer carries no predictions to judge (detector.return_all_predictions off), or too many labels
# were already waiting for their answers (feedback.max_pending).
UNPLACED_REASONS = ("answer_without_predictions", "pending_full")


@dataclass
class VersionOutcome:
    """A joined feedback record's counts for one detector version in one role."""

    detector: str
    version: str
    role: str
    instances: int
    correct: dict[str, int]
    confusion: dict[tuple[str, str], int]


@dataclass
class Outcome:
    """A feedback record's effect: its result and the counts it adds (all zero unless joined)."""

    result: str
    instances: int = 0
    correct: dict[str, int] = field(default_factory=dict)
    confusion: dict[tuple[str, str], int] = field(default_factory=dict)  # (flag, undefended) -> instances
    versions: list[VersionOutcome] = field(default_factory=list)  # the same, per detector version and role
    reason: str | None = None  # why, for result "unplaced" (UNPLACED_REASONS)
    evidence: list[PairedEvidence] = field(default_factory=list)  # paired counts of the newly labelled
    request_id: str = ""  # the request whose answer the label judged (joined labels)
