"""How close two computations of the same detector's answers must be: a bound from float32 arithmetic.

The same instance scored in two batch shapes (1, 7, 64 instances; a bucket padded with zeros; another
process) runs the same graph with other matmul kernels and summation orders, so its float32 score can
differ in the last bits. How many bits, from the arithmetic rather than from one machine's luck
(eps = 2**-23 ~ 1.19e-7, C classes, S the score):

- The softmax of each of p and q rounds each probability to a relative error of about (3 + C) eps / 2
  (exp, the C-term sum, the division). Through S = sum p log(p / q), which is linear in log q and p,
  that is an absolute error of up to (3 + C) eps per computation whatever S is, and two computations
  may err in opposite directions: 2 (3 + C) eps, 26 eps for the 10 classes used here. The KL's own
  ratio, log, product and C-term sum add about (C + 2) eps / 2 each (12 eps for two computations).
  Together under 40 eps: the atol below takes 64 eps (7.6e-6), so an absolute error on a score
  of 0.0045 is expected, and the relative error of a score near zero is unbounded. This is the pattern
  the old rtol=1e-5, atol=1e-7 missed (1.8e-7 seen on 0.0045 in CI).
- A reordered k-term matmul moves the logits by up to k eps |z| (k <= 64 inputs per unit here, |z| up
  to ~10 for confident classes). Its effect on S grows with S: through q by at most ||p - q||_1 max|dz|
  (small when p ~ q), through p by at most max|dz| sum p |log p/q|, i.e. relative to S: rtol 1e-4
  covers k |z| eps = 640 eps.

Flags and labels are equal except where the arithmetic allows otherwise: an instance whose score lies
within the bound of the threshold may flag either way, and an argmax whose top two probabilities lie
within the same rounding may pick either class. Those instances are counted and must stay rare, so a
check cannot pass by excusing everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)
SCORE_ATOL = 64 * EPS32
SCORE_RTOL = 1e-4
PROB_RTOL = 64 * EPS32  # two probabilities closer than this (relative) may swap order between computations
MAX_EXCUSED_SHARE = 0.05  # more near-ties than this (and than one) and the check says so instead of excusing them


def score_bound(reference: np.ndarray) -> np.ndarray:
    return SCORE_ATOL + SCORE_RTOL * np.abs(np.asarray(reference, np.float64))


def assert_scores_close(got: np.ndarray, reference: np.ndarray) -> None:
    got, reference = np.asarray(got, np.float64), np.asarray(reference, np.float64)
    assert got.shape == reference.shape, (got.shape, reference.shape)
    err = np.abs(got - reference)
    bound = score_bound(reference)
    worst = int(np.argmax(err - bound)) if err.size else 0
    assert np.all(err <= bound), (
        f"score {worst}: {got[worst]!r} vs {reference[worst]!r}, |diff| {err[worst]:.3g} > bound {bound[worst]:.3g}"
    )


def near_tie(probs: np.ndarray) -> np.ndarray:
    """Instances whose top two probabilities could swap order between two computations."""
    top2 = np.sort(probs, axis=-1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) <= PROB_RTOL * top2[:, 1]


def assert_same_answers(
    got: Mapping[str, Any], reference: Mapping[str, Any], threshold: float, p: np.ndarray, q: np.ndarray
) -> None:
    """got and reference: answer fields of the same instances (instance_score, is_adversarial, corrected,
    and no_defense / defense where both have them); p, q: the reference's M(x) and M(AE(x)), for the ties."""
    ref_score = np.asarray(reference["instance_score"], np.float64)
    if "instance_score" in got and got["instance_score"] is not None:
        assert_scores_close(got["instance_score"], ref_score)
    at_threshold = np.abs(ref_score - threshold) <= score_bound(ref_score)
    tie_p, tie_q = near_tie(np.asarray(p)), near_tie(np.asarray(q))
    excused = at_threshold | tie_p | tie_q
    # One excused instance is always allowed: a request of 3 instances with one score within the bound
    # of the threshold is 33 % excused (seen once in CI: score 0.24456 vs threshold 0.24457, bound 3.2e-5).
    # Its score is still checked above, so even a fully excused request is not unchecked.
    allowed = max(1.0, MAX_EXCUSED_SHARE * excused.size)
    assert excused.sum() <= allowed, f"{excused.sum()} of {excused.size} instances are near-ties"
    flags = np.asarray(got["is_adversarial"]).astype(bool)
    ref_flags = np.asarray(reference["is_adversarial"]).astype(bool)
    np.testing.assert_array_equal(flags[~at_threshold], ref_flags[~at_threshold])
    same = ~excused & (flags == ref_flags)
    np.testing.assert_array_equal(np.asarray(got["corrected"])[same], np.asarray(reference["corrected"])[same])
    for key, tie in (("no_defense", tie_p), ("defense", tie_q)):
        if got.get(key) is not None and reference.get(key) is not None:
            np.testing.assert_array_equal(np.asarray(got[key])[~tie], np.asarray(reference[key])[~tie])


def assert_answers_match_detector(got: Mapping[str, Any], detector: Any, x: np.ndarray) -> None:
    """got: answer fields for x from any path (a batch shape, the stream, a codec); the detector's own
    correct() on x is the reference."""
    reference = detector.correct(x, return_instance_score=True, return_all_predictions=True)["data"]
    _, p, q = detector.score(x, return_predictions=True)
    assert_same_answers(got, reference, float(detector.threshold), p, q)
