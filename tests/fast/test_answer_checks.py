"""The float32 answer bound of tests/answer_checks.py excuses rounding and nothing more."""

from __future__ import annotations

import numpy as np
import pytest

from tests.answer_checks import SCORE_ATOL, assert_same_answers, score_bound


def _answers(scores, threshold, p, q):
    flags = scores > threshold
    return {
        "instance_score": scores,
        "is_adversarial": flags.astype(int),
        "corrected": np.where(flags, q.argmax(-1), p.argmax(-1)),
        "no_defense": p.argmax(-1),
        "defense": q.argmax(-1),
    }


@pytest.fixture
def reference():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), 200)
    q = rng.dirichlet(np.ones(10), 200)
    scores = rng.uniform(0, 0.1, 200)
    return scores, 0.05, p, q


def test_rounding_within_the_bound_passes(reference):
    scores, thr, p, q = reference
    ref = _answers(scores, thr, p, q)
    jitter = np.random.default_rng(1).uniform(-1, 1, scores.shape) * score_bound(scores) * 0.99
    assert_same_answers({**ref, "instance_score": scores + jitter}, ref, thr, p, q)


def test_a_score_past_the_bound_fails(reference):
    scores, thr, p, q = reference
    ref = _answers(scores, thr, p, q)
    moved = scores.copy()
    moved[3] += 2 * score_bound(scores[3])
    with pytest.raises(AssertionError, match="score 3"):
        assert_same_answers({**ref, "instance_score": moved}, ref, thr, p, q)


def test_a_flag_away_from_the_threshold_fails(reference):
    scores, thr, p, q = reference
    ref = _answers(scores, thr, p, q)
    far = int(np.argmax(np.abs(scores - thr)))
    flags = ref["is_adversarial"].copy()
    flags[far] ^= 1
    with pytest.raises(AssertionError):
        assert_same_answers({**ref, "is_adversarial": flags}, ref, thr, p, q)


def test_a_flag_at_the_threshold_may_go_either_way_but_a_label_may_not(reference):
    scores, thr, p, q = reference
    scores = scores.copy()
    scores[0] = thr + SCORE_ATOL / 2
    ref = _answers(scores, thr, p, q)
    flags = ref["is_adversarial"].copy()
    flags[0] ^= 1
    assert_same_answers({**ref, "is_adversarial": flags}, ref, thr, p, q)
    labels = ref["no_defense"].copy()
    labels[1] = (labels[1] + 1) % 10
    with pytest.raises(AssertionError):
        assert_same_answers({**ref, "no_defense": labels}, ref, thr, p, q)


def test_too_many_near_ties_are_reported_not_excused(reference):
    scores, thr, p, q = reference
    scores = np.full_like(scores, thr)
    ref = _answers(scores, thr, p, q)
    with pytest.raises(AssertionError, match="near-ties"):
        assert_same_answers(ref, ref, thr, p, q)


def test_one_instance_at_the_threshold_is_excused_even_in_a_small_request(reference):
    """A 3-instance request with one score at the threshold: 33 % excused, yet nothing is wrong."""
    scores, thr, p, q = reference
    scores = scores[:3].copy()
    scores[1] = thr + SCORE_ATOL / 2
    ref = _answers(scores, thr, p[:3], q[:3])
    flags = ref["is_adversarial"].copy()
    flags[1] ^= 1
    assert_same_answers({**ref, "is_adversarial": flags}, ref, thr, p[:3], q[:3])
    scores[0] = thr  # two of three: reported
    ref = _answers(scores, thr, p[:3], q[:3])
    with pytest.raises(AssertionError, match="near-ties"):
        assert_same_answers(ref, ref, thr, p[:3], q[:3])
