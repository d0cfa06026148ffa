"""The evidence labels give: one type for the join that counts it, the ledger that carries it, the
decision-maker that sums it and the tests that decide on it (adae_stream/decisions/rules.py).

Two options A and B of one detector judged on the same labelled instances: ``b`` where only B was right,
``c`` where only A was right, ``m`` where both were right or both wrong. Kind "defense": A is the
undefended prediction and B the corrected one, of version ``a_version``. Kind "versions": A is the serving
version's corrected prediction and B the shadow's (``b_version``); for the label-free guard it also counts
the instances the serving version left unflagged (``a_clean``) and how many of those the shadow flagged
(``b_flagged_clean``). Counts add over labels, replicas and restarts in any order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KINDS = ("defense", "versions")
Key = tuple[str, str, str, str]  # (kind, detector, a_version, b_version)


@dataclass(frozen=True)
class Counts:
    b: int = 0
    c: int = 0
    m: int = 0
    a_clean: int = 0
    b_flagged_clean: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(x + y for x, y in zip(self.values(), other.values(), strict=True)))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(*(x - y for x, y in zip(self.values(), other.values(), strict=True)))

    def values(self) -> tuple[int, ...]:
        """In the order of COUNT_FIELDS (the ledger's and the saved state's order)."""
        return dataclasses.astuple(self)

    @property
    def discordant(self) -> int:
        return self.b + self.c

    @property
    def instances(self) -> int:
        return self.b + self.c + self.m

    def swapped(self) -> Counts:
        """B as A and A as B (the mirror test): only the paired counts, which are all that is symmetric."""
        return Counts(self.c, self.b, self.m)


COUNT_FIELDS = tuple(f.name for f in dataclasses.fields(Counts))


@dataclass(frozen=True)
class PairedEvidence:
    """One comparison's counts from one label."""

    kind: str
    detector: str
    a_version: str
    b_version: str
    counts: Counts

    @property
    def key(self) -> Key:
        return (self.kind, self.detector, self.a_version, self.b_version)
