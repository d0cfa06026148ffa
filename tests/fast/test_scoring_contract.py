"""The detector's stream scorer keeps the contract the stream is typed against (adae_stream/scoring.py)."""

from __future__ import annotations

from adae_stream.scoring import RESULT_DTYPES, answer_fields
from tests.answer_checks import assert_answers_match_detector


def test_the_stream_scorer_returns_every_result_array_with_its_dtype(digits_setup, digits_scorer):
    detector, x = digits_setup["detector"], digits_setup["Xte"][:5]
    result = digits_scorer(x)
    assert set(result) == set(RESULT_DTYPES)
    for name, dtype in RESULT_DTYPES.items():
        assert result[name].dtype == dtype and result[name].shape == (5,), name
    assert_answers_match_detector(result, detector, x)


def test_the_scorer_describes_its_detector(digits_setup, digits_scorer):
    import tensorflow as tf

    detector, info = digits_setup["detector"], digits_scorer.info
    assert info.input_shape == (8, 8, 1) and info.n_classes == 10
    assert info.threshold == detector.threshold and info.version == detector.meta["version"]
    assert len(info.detector_id) == len(info.classifier_id) == 16
    assert info.identity == {"detector_id": info.detector_id, "classifier_id": info.classifier_id}
    assert info.runtime == f"tensorflow {tf.__version__}"
    assert info.reference_scores is not None and len(info.reference_scores) > 0


def test_warmup_traces_the_buckets_a_batch_can_need_once(digits_setup):
    """What warmup promises the loop: after it, a live batch of up to ``up_to`` instances traces nothing."""
    scorer = digits_setup["detector"].stream_scorer([1, 8, 32])
    traced = scorer.fused._fns  # one concrete function per (bucket, with_probs)
    scorer.warmup(5)
    assert set(traced) == {(1, False), (8, False)}
    functions = dict(traced)
    scorer.warmup(8)
    scorer(digits_setup["Xte"][:6])  # bucket 8
    assert traced == functions and all(traced[k] is functions[k] for k in functions)  # none traced again
    scorer.warmup()
    assert set(traced) == {(1, False), (8, False), (32, False)}


def test_answer_fields_follow_the_config():
    assert answer_fields(False, False) == ("prediction", "corrected", "is_adversarial")
    assert answer_fields(True, True) == (
        "prediction",
        "corrected",
        "is_adversarial",
        "instance_score",
        "no_defense",
        "defense",
    )
