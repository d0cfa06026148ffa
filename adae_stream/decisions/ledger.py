"""The evidence ledger: every label's paired evidence as one record on ``kafka.evidence_topic``.

Why a topic and not the Prometheus counters: a counter lives in one process, so a replica's restart
resets it, and a sum over /metrics endpoints (or Prometheus' ``increase``) loses or extrapolates what
happened between two scrapes. A record written in the transaction that consumes the label is counted
exactly once under ``delivery: exactly_once`` (at most twice after a crash under at_least_once, like any
output), whichever replica the label reaches, and read back by one decision-maker with read_committed.
The counters stay, for dashboards.

Pure code: encoding, decoding and summing; the Kafka reader is decisions/ledger_reader.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from adae_stream.decisions.rules import Pairs
from adae_stream.stream.telemetry import PairedEvidence

LEDGER_VERSION = 1
FIELDS = ("kind", "detector", "a_version", "b_version", "b", "c", "m", "a_clean", "b_flagged_clean")


def encode_evidence(evidence: Iterable[PairedEvidence]) -> bytes:
    """One label's evidence as a ledger record's value (compact JSON, a few hundred bytes)."""
    rows = [[getattr(e, f) for f in FIELDS] for e in evidence]
    return json.dumps({"v": LEDGER_VERSION, "evidence": rows}, separators=(",", ":")).encode()


def decode_evidence(value: bytes | None) -> list[PairedEvidence]:
    """The evidence of one ledger record; ValueError for anything else (the reader counts and skips it)."""
    try:
        body = json.loads(value or b"")
        if body.get("v") != LEDGER_VERSION:
            raise ValueError(f"ledger version {body.get('v')!r}, expected {LEDGER_VERSION}")
        out = [PairedEvidence(*row) for row in body["evidence"]]
    except (TypeError, KeyError, AttributeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not an evidence record: {type(exc).__name__}: {exc}") from None
    for e in out:
        counts = (e.b, e.c, e.m, e.a_clean, e.b_flagged_clean)
        if e.kind not in ("defense", "versions") or not all(type(n) is int and n >= 0 for n in counts):
            raise ValueError(f"not an evidence record: {e}")
    return out


Key = tuple[str, str, str, str]  # (kind, detector, a_version, b_version)


@dataclass
class Tally:
    """Summed evidence of one comparison."""

    b: int = 0
    c: int = 0
    m: int = 0
    a_clean: int = 0
    b_flagged_clean: int = 0

    def add(self, e: PairedEvidence) -> None:
        self.b += e.b
        self.c += e.c
        self.m += e.m
        self.a_clean += e.a_clean
        self.b_flagged_clean += e.b_flagged_clean

    def since(self, base: Tally | None) -> Tally:
        """What came after ``base`` (the counts at a human's edit, from which a test starts again)."""
        if base is None:
            return Tally(**vars(self))
        return Tally(*(getattr(self, k) - getattr(base, k) for k in vars(self)))

    @property
    def pairs(self) -> Pairs:
        return Pairs(self.b, self.c, self.m)


@dataclass
class Totals:
    """Every comparison's evidence summed over the ledger, and how far the ledger has been read."""

    tallies: dict[Key, Tally] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to read
    skipped: int = 0  # records that were not evidence

    def add(self, evidence: Iterable[PairedEvidence]) -> None:
        for e in evidence:
            self.tallies.setdefault((e.kind, e.detector, e.a_version, e.b_version), Tally()).add(e)

    def get(self, kind: str, detector: str, a: object, b: object) -> Tally:
        """A copy of the comparison's counts now (a base to measure later evidence from)."""
        return Tally(**vars(self.tallies.get((kind, detector, str(a), str(b)), Tally())))

    def to_json(self) -> dict:
        return {
            "tallies": [[*k, *vars(t).values()] for k, t in sorted(self.tallies.items())],
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            "skipped": self.skipped,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Totals:
        tallies = {tuple(row[:4]): Tally(*row[4:]) for row in data.get("tallies", [])}
        offsets = {int(p): int(o) for p, o in data.get("offsets", {}).items()}
        return cls(tallies, offsets, int(data.get("skipped", 0)))
