"""The decisions as functions of summed counters: thresholds, guards, and that a switch can turn back."""

from __future__ import annotations

import math

import pytest

from adae_stream.decisions.rules import (
    alpha_per_test,
    decide_defense,
    decide_promotion,
    decide_rollback,
)
from adae_stream.decisions.sequential import log_sign_e
from adae_stream.feedback.evidence import Counts


def test_defense_switches_to_no_defense_when_correction_hurts_and_back_when_it_helps():
    hurts = Counts(b=20, c=60, m=900)  # corrected right alone 20 times, undefended right alone 60
    verdict = decide_defense(hurts, alpha=0.05, min_discordant=30, current="corrected")
    assert verdict.decision == "no_defense"
    assert verdict.log_e["corrected_worse"] == pytest.approx(log_sign_e(60, 20))
    assert verdict.log_e["corrected_worse"] >= math.log(2 / 0.05)
    assert decide_defense(hurts, 0.05, 30, current="no_defense").decision is None  # already published
    helps = Counts(b=60, c=20, m=900)
    assert decide_defense(helps, 0.05, 30, current="no_defense").decision == "corrected"


def test_no_decision_below_the_minimum_or_without_enough_evidence():
    assert decide_defense(Counts(0, 12), 0.05, min_discordant=30, current="corrected").decision is None
    assert decide_defense(Counts(0, 12), 0.05, min_discordant=5, current="corrected").decision == "no_defense"
    assert decide_defense(Counts(30, 32), 0.05, min_discordant=5, current="corrected").decision is None


def test_promotion_needs_noninferiority_and_rollback_needs_strictly_worse():
    better = Counts(b=80, c=30, m=2000)  # the shadow right alone 80 times, the serving version 30
    assert decide_promotion(better, 0.05, delta=0.0, min_discordant=30).decision == "promote"
    assert decide_promotion(better.swapped(), 0.05, delta=0.0, min_discordant=30).decision is None
    assert decide_promotion(Counts(40, 40, 2000), 0.05, delta=0.02, min_discordant=30).decision == "promote"
    assert decide_promotion(Counts(40, 40, 2000), 0.05, delta=0.0, min_discordant=30).decision is None
    # on probation: the previous version (now the shadow) right alone 80 times, the promoted one 30
    assert decide_rollback(Counts(b=80, c=30, m=2000), 0.05, min_discordant=30).decision == "rollback"
    assert decide_rollback(Counts(b=35, c=30, m=2000), 0.05, min_discordant=30).decision is None


def test_alpha_is_shared_across_the_two_tests_of_every_detector():
    assert alpha_per_test(0.05, 4) == pytest.approx(0.05 / 8)
    strict = alpha_per_test(0.05, 25)
    # log E(corrected worse) for 50 vs 20 is 5.3: past log(2/0.05) = 3.7, short of log(2/0.001) = 7.6
    assert decide_defense(Counts(20, 50), 0.05, 30, "corrected").decision == "no_defense"
    assert decide_defense(Counts(20, 50), strict, 30, "corrected").decision is None
    with pytest.raises(ValueError):
        alpha_per_test(0.05, 0)
