"""The evidence ledger: every label's paired evidence as one record on ``kafka.evidence_topic``.

Why a topic and not the Prometheus counters: a counter lives in one process, so a replica's restart
resets it, and a sum over /metrics endpoints (or Prometheus' ``increase``) loses or extrapolates what
happened between two scrapes. A record written in the transaction that consumes the label is counted
exactly once under ``delivery: exactly_once`` (at most twice after a crash under at_least_once, like any
output), whichever replica the label reaches, and read back by one decision-maker with read_committed.
The counters stay, for dashboards, and count what the ledger holds (journal.py).

Pure code: encoding, decoding and summing; the Kafka reader is ledger_reader.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from adae_stream.feedback.evidence import COUNT_FIELDS, KINDS, Counts, Key, PairedEvidence

LEDGER_VERSION = 1  # a row: kind, detector, a_version, b_version, then COUNT_FIELDS in order


def encode_evidence(evidence: Iterable[PairedEvidence], request_id: str = "") -> bytes:
    """One label's evidence as a ledger record's value (compact JSON, a few hundred bytes), with the id of
    the request the label judged: which label gave which evidence can be audited, and a label counted twice
    or never found (tests/broker/test_evidence_faults.py). Readers need only ``v`` and ``evidence``."""
    rows = [[*e.key, *e.counts.values()] for e in evidence]
    body = {"v": LEDGER_VERSION, "id": request_id, "evidence": rows}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_evidence(value: bytes | None) -> list[PairedEvidence]:
    """The evidence of one ledger record; ValueError for anything else (the reader counts and skips it)."""
    try:
        body = json.loads(value or b"")
        if body.get("v") != LEDGER_VERSION:
            raise ValueError(f"ledger version {body.get('v')!r}, expected {LEDGER_VERSION}")
        rows = body["evidence"]
        out = [PairedEvidence(row[0], row[1], row[2], row[3], Counts(*row[4:])) for row in rows]
    except (TypeError, KeyError, AttributeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not an evidence record: {type(exc).__name__}: {exc}") from None
    for row, e in zip(rows, out, strict=True):
        counts = e.counts.values()
        if (
            len(row) != 4 + len(COUNT_FIELDS)
            or e.kind not in KINDS
            or not all(type(n) is int and n >= 0 for n in counts)
        ):
            raise ValueError(f"not an evidence record: {row}")
    return out


@dataclass
class Totals:
    """Every comparison's evidence summed over the ledger, and how far the ledger has been read."""

    tallies: dict[Key, Counts] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to read
    skipped: int = 0  # records that were not evidence

    def add(self, evidence: Iterable[PairedEvidence]) -> None:
        for e in evidence:
            self.tallies[e.key] = self.tallies.get(e.key, Counts()) + e.counts

    def get(self, kind: str, detector: str, a: object, b: object) -> Counts:
        """The comparison's counts now (a base to measure later evidence from)."""
        return self.tallies.get((kind, detector, str(a), str(b)), Counts())

    def to_json(self) -> dict:
        return {
            "tallies": [[*k, *c.values()] for k, c in sorted(self.tallies.items())],
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            "skipped": self.skipped,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Totals:
        tallies = {(row[0], row[1], row[2], row[3]): Counts(*row[4:]) for row in data.get("tallies", [])}
        offsets = {int(p): int(o) for p, o in data.get("offsets", {}).items()}
        return cls(tallies, offsets, int(data.get("skipped", 0)))
