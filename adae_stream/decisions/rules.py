"""The decisions the live evidence can make, as pure functions of summed counters (no Kafka, no clock).

- Defense, per detector: publish the corrected prediction or the undefended one. Two one-sided sign tests
  at alpha/2 each (corrected better; corrected worse) on the labelled instances where the two differ.
  Which one is published changes nothing in the counts: every answer carries both predictions, so the
  comparison goes on after a switch and can switch back.
- Rollout, per detector: promote a shadow that is non-inferior to the serving version by the margin
  delta; roll back a serving version shown strictly worse than the one it replaced (kept as the shadow
  for a probation period).
- After a decided switch of the defense, switching back is a change to detect (``decide_switch_back``): a
  CUSUM-type e-detector from the switch, whose delay does not grow with the evidence gathered since (a sign
  test from the switch needed 2,670 helpful pairs to undo 2,000 harmful ones). Its guarantee is an average
  run length: at least ``decisions.switch_back_arl`` discordant pairs before a false switch back.
- Alpha is shared across the two tests of each of the K detectors under test (alpha / (2K) each:
  ``alpha_per_test``), so the chance of any false decision across the repository stays at most alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from adae_stream.decisions.sequential import (
    SWITCH_GRID,
    cusum_e_step,
    log_cusum_e,
    log_noninferiority_e,
    log_sign_e,
)
from adae_stream.feedback.evidence import Counts

Defense = Literal["corrected", "no_defense"]


@dataclass(frozen=True)
class Verdict:
    """What a test concluded, with the evidence to log, export and write beside the decision."""

    decision: str | None  # None: the evidence does not decide (yet)
    log_e: dict[str, float]
    pairs: Counts
    alpha: float

    @property
    def e_values(self) -> dict[str, float]:
        return {name: math.exp(min(value, 700.0)) for name, value in self.log_e.items()}


def alpha_per_test(alpha: float, detectors: int) -> float:
    """Bonferroni across the two tests (defense; promotion or rollback) of each of the K detectors under test:
    each test gets alpha / (2K). The defense test spends its share as alpha / (4K) per direction."""
    if not 0.0 < alpha < 1.0 or detectors < 1:
        raise ValueError("alpha in (0, 1) and at least one detector")
    return alpha / (2 * detectors)


def decide_defense(pairs: Counts, alpha: float, min_discordant: int, current: Defense) -> Verdict:
    """``pairs``: A = the undefended prediction, B = the corrected one. Switches only when one direction's
    e-value reaches 2/alpha (each side at alpha/2) above the other's, and only past ``min_discordant``."""
    log_e = {"corrected_better": log_sign_e(pairs.b, pairs.c), "corrected_worse": log_sign_e(pairs.c, pairs.b)}
    threshold = math.log(2.0 / alpha)
    decision: str | None = None
    if pairs.discordant >= min_discordant:
        if log_e["corrected_worse"] >= threshold and log_e["corrected_worse"] > log_e["corrected_better"]:
            decision = "no_defense"
        elif log_e["corrected_better"] >= threshold and log_e["corrected_better"] > log_e["corrected_worse"]:
            decision = "corrected"
    if decision == current:
        decision = None  # nothing to change
    return Verdict(decision, log_e, pairs, alpha)


def decide_promotion(pairs: Counts, alpha: float, delta: float, min_discordant: int) -> Verdict:
    """``pairs``: A = the serving version, B = the shadow. Promote the shadow once it is shown
    non-inferior by ``delta`` (delta 0: at least as good)."""
    log_e = {"shadow_noninferior": log_noninferiority_e(pairs.b, pairs.c, pairs.m, delta)}
    decided = pairs.discordant >= min_discordant and log_e["shadow_noninferior"] >= math.log(1.0 / alpha)
    return Verdict("promote" if decided else None, log_e, pairs, alpha)


def decide_rollback(pairs: Counts, alpha: float, min_discordant: int) -> Verdict:
    """``pairs``: A = the serving version (promoted), B = the one it replaced, now the shadow on probation.
    Roll back once the serving version is shown strictly worse (the previous one non-inferior at margin 0
    and ahead: the mirror test)."""
    log_e = {"serving_worse": log_noninferiority_e(pairs.b, pairs.c, pairs.m, 0.0)}
    decided = pairs.discordant >= min_discordant and log_e["serving_worse"] >= math.log(1.0 / alpha)
    return Verdict("rollback" if decided else None, log_e, pairs, alpha)


def switch_back_start(publish: Defense, pairs: Counts) -> dict:
    """The switch back's e-detector, started at a decided switch to ``publish`` (``pairs``: the counts then)."""
    return {"publish": publish, "seen": [pairs.b, pairs.c], "log_cusum": [0.0] * len(SWITCH_GRID), "pairs": 0}


def decide_switch_back(
    detector: dict, pairs: Counts, arl: float, min_discordant: int, alpha: float
) -> tuple[Verdict, dict]:
    """``detector``: switch_back_start's state; ``pairs``: the defense's counts now (A undefended, B corrected).
    Returns the verdict (decision: the other choice, once the e-detector reaches ``arl``) and the updated
    state. The other choice's wins are B's when no_defense is published, A's when corrected is."""
    b, c = pairs.b - detector["seen"][0], pairs.c - detector["seen"][1]
    wins, losses = (b, c) if detector["publish"] == "no_defense" else (c, b)
    log_cusum = cusum_e_step(detector["log_cusum"], max(0, wins), max(0, losses))
    since = detector["pairs"] + max(0, b) + max(0, c)
    updated = {**detector, "seen": [pairs.b, pairs.c], "log_cusum": log_cusum, "pairs": since}
    other = "corrected" if detector["publish"] == "no_defense" else "no_defense"
    name = "corrected_better" if other == "corrected" else "corrected_worse"
    log_e = {name: log_cusum_e(log_cusum)}
    decided = since >= min_discordant and log_e[name] >= math.log(arl)
    return Verdict(other if decided else None, log_e, pairs, alpha), updated
