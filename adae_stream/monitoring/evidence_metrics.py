"""The paired evidence the decisions take (adae_stream/decisions/), as counters that sum over replicas.

Each labelled instance adds 1 to one of three series of a comparison: only B right, only A right, or
concordant. Per detector and version(s); like the feedback series, the last few versions of a detector
keep counting after a swap, since their labels keep coming.
"""

from __future__ import annotations

from collections import OrderedDict

from prometheus_client import CollectorRegistry, Counter

from adae_stream.feedback.evidence import PairedEvidence

MAX_COMPARISONS_PER_DETECTOR = 8
DEFENSE_PAIRS = ("corrected_only", "undefended_only", "concordant")  # b, c, m of kind "defense"
VERSION_PAIRS = ("shadow_only", "serving_only", "concordant")  # b, c, m of kind "versions"


class EvidenceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.defense = Counter(
            "adae_evidence_defense_instances",
            "Labelled instances by which of the corrected and the undefended prediction was right: only the "
            "corrected, only the undefended, or both / neither (concordant). Per detector version.",
            ["detector", "version", "pair"],
            registry=registry,
        )
        self.versions = Counter(
            "adae_evidence_version_instances",
            "Labelled instances by which of the serving and the shadow version's corrected prediction was "
            "right: only the shadow's, only the serving one's, or both / neither (concordant).",
            ["detector", "serving", "shadow", "pair"],
            registry=registry,
        )
        self._seen: dict[str, OrderedDict[tuple[str, str, str], None]] = {}

    def record(self, evidence: list[PairedEvidence]) -> None:
        for e in evidence:
            counts = (e.counts.b, e.counts.c, e.counts.m)
            if e.kind == "defense":
                self._keep(e.detector, ("defense", e.a_version, ""))
                for pair, n in zip(DEFENSE_PAIRS, counts, strict=True):
                    self.defense.labels(e.detector, e.a_version, pair).inc(n)
            else:
                self._keep(e.detector, ("versions", e.a_version, e.b_version))
                for pair, n in zip(VERSION_PAIRS, counts, strict=True):
                    self.versions.labels(e.detector, e.a_version, e.b_version, pair).inc(n)

    def _keep(self, detector: str, comparison: tuple[str, str, str]) -> None:
        """Bounded series: the oldest comparison of a detector goes past MAX_COMPARISONS_PER_DETECTOR."""
        seen = self._seen.setdefault(detector, OrderedDict())
        seen[comparison] = None
        seen.move_to_end(comparison)
        while len(seen) > MAX_COMPARISONS_PER_DETECTOR:
            (kind, a, b), _ = seen.popitem(last=False)
            for pair in DEFENSE_PAIRS if kind == "defense" else VERSION_PAIRS:
                try:
                    if kind == "defense":
                        self.defense.remove(detector, a, pair)
                    else:
                        self.versions.remove(detector, a, b, pair)
                except KeyError:
                    pass
