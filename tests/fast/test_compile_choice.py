"""``detector.jit_compile: auto``: the faster form per bucket, from the smallest bucket up, stopping at the
first loss; the rule alone on a scripted clock, and the scorer on TensorFlow with scripted timings (a real
timing decides nothing testable on a shared machine: benchmarks/RESULTS.md has the measured choices)."""

from __future__ import annotations

import numpy as np
import pytest

from adae_stream.detector import compile_choice
from adae_stream.detector.compile_choice import second_is_faster, timed_pairs


@pytest.fixture(autouse=True)
def nothing_remembered():
    """Each test starts with no architecture timed before (the memo is process-wide)."""
    compile_choice.REMEMBERED.clear()


class ScriptedClock:
    """perf_counter stand-in: each call of a timed function advances it by that function's cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def costing(self, seconds: float):
        def fn(_x: np.ndarray) -> None:
            self.now += seconds

        return fn


def test_pairs_alternate_drop_the_first_and_stop_at_the_cap_or_the_budget():
    clock = ScriptedClock()
    first, second = timed_pairs(clock.costing(0.001), clock.costing(0.002), np.zeros(1), clock=clock)
    assert first == pytest.approx([0.001] * compile_choice.MAX_PAIRS)  # cheap calls: the cap, first pair dropped
    assert second == pytest.approx([0.002] * compile_choice.MAX_PAIRS)
    clock = ScriptedClock()
    first, second = timed_pairs(clock.costing(0.2), clock.costing(0.1), np.zeros(1), clock=clock)
    # 0.3 s a pair against a 0.25 s budget: the minimum (MIN_PAIRS + the dropped one), no more
    assert len(first) == len(second) == compile_choice.MIN_PAIRS


def test_the_second_form_wins_only_past_the_margin():
    base = [1.0, 1.0, 3.0]  # median 1.0 whatever the outlier
    assert second_is_faster(base, [0.9, 0.9, 0.1])
    assert not second_is_faster(base, [0.96, 0.96, 0.1])  # within the 5 % margin: the default form stays
    assert not second_is_faster(base, [1.5, 1.5, 0.1])


def _tiny_detector(seed: int = 3, width: int = 8):
    import keras

    from adae_stream import AdversarialAE

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(width, activation="relu"), keras.layers.Dense(3, activation="softmax")]
    )
    ae = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(6)])
    det = AdversarialAE(ae=ae, model=model, data_type="tabular")
    x = np.random.default_rng(3).normal(size=(64, 6)).astype(np.float32)
    det.infer_threshold(x, 50)
    return det, x


def _scripted_wins(monkeypatch, wins: dict[int, bool]) -> list[int]:
    """Timings that make the alternative win or lose per bucket; returns the buckets timed."""
    timed: list[int] = []

    def fake_pairs(default, alternative, x):
        size = x.shape[0]
        timed.append(size)
        return [1.0] * 3, [0.5 if wins[size] else 2.0] * 3

    monkeypatch.setattr("adae_stream.detector.scorer.timed_pairs", fake_pairs)
    return timed


def test_auto_takes_the_alternative_from_the_smallest_bucket_up_and_stops_at_its_first_loss(monkeypatch):
    import keras

    det, x = _tiny_detector()
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only TensorFlow has a second form to choose (JAX always compiles, torch.compile is opt-in)")
    timed = _scripted_wins(monkeypatch, {1: True, 4: False, 16: True})
    auto = det.stream_scorer([1, 4, 16], jit_compile="auto")
    auto.warmup()
    assert auto.fused.alternative_buckets == [1]
    assert timed == [1, 4]  # 16 is never compiled in XLA once 4 lost

    # the forms agree: float32 scores from the same weights, summed in another order by XLA (a few ulps of
    # the largest term); labels and flags identical away from the threshold
    plain = det.stream_scorer([1, 4, 16], jit_compile=False)
    for n in (1, 3, 4, 9, 16):
        a, b = auto(x[:n]), plain(x[:n])
        np.testing.assert_allclose(a["instance_score"], b["instance_score"], rtol=1e-5, atol=1e-6)
        for key in ("corrected", "no_defense", "defense"):
            np.testing.assert_array_equal(a[key], b[key])
        clear = np.abs(b["instance_score"] - det.threshold) > 1e-5 * max(1.0, abs(det.threshold))
        np.testing.assert_array_equal(a["is_adversarial"][clear], b["is_adversarial"][clear])


def test_a_bucket_the_compiler_refuses_keeps_the_default_form(monkeypatch):
    import keras

    det, x = _tiny_detector()
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only TensorFlow has a second form to choose")
    _scripted_wins(monkeypatch, {1: True, 4: True})
    auto = det.stream_scorer([1, 4], jit_compile="auto")

    def refuse(*args, **kwargs):
        raise RuntimeError("XLA: unsupported op")

    monkeypatch.setattr(auto.fused._alternative, "fn", refuse)
    auto.warmup()
    assert auto.fused.alternative_buckets == []
    np.testing.assert_array_equal(auto(x[:4])["defense"], det.stream_scorer([1, 4])(x[:4])["defense"])


def test_a_new_version_of_the_same_architecture_takes_the_timed_choice_without_timing_again(monkeypatch):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("only TensorFlow has a second form to choose")
    timed = _scripted_wins(monkeypatch, {1: True, 4: False})
    first = _tiny_detector()[0].stream_scorer([1, 4], jit_compile="auto")
    first.warmup()
    assert first.fused.alternative_buckets == [1] and timed == [1, 4]

    det, x = _tiny_detector(seed=4)  # other weights, the same layers: a retrained version
    second = det.stream_scorer([1, 4], jit_compile="auto")
    compiled: list[int] = []
    default_fn = second.fused._compiled.fn
    monkeypatch.setattr(
        second.fused._compiled, "fn", lambda size, *args: compiled.append(size) or default_fn(size, *args)
    )
    second.warmup()
    assert second.fused.alternative_buckets == [1]
    assert timed == [1, 4]  # nothing timed again
    assert compiled == [4]  # and the default form compiled only where it serves
    np.testing.assert_allclose(
        second(x[:5])["instance_score"], det.stream_scorer([1, 4])(x[:5])["instance_score"], rtol=1e-5, atol=1e-6
    )

    _tiny_detector(width=9)[0].stream_scorer([1, 4], jit_compile="auto").warmup()  # another architecture
    assert timed == [1, 4, 1, 4]
    _tiny_detector()[0].stream_scorer([1], jit_compile="auto").warmup()  # other buckets
    assert timed == [1, 4, 1, 4, 1]


def test_without_auto_nothing_is_timed(monkeypatch):
    det, _ = _tiny_detector()
    timed = _scripted_wins(monkeypatch, {1: True, 4: True})
    for choice in (False, True):
        scorer = det.stream_scorer([1, 4], jit_compile=choice)
        scorer.warmup()
        assert scorer.fused.alternative_buckets == []
    assert timed == []


def test_the_service_default_reaches_the_scorer_and_its_choice_is_logged(tmp_path, caplog):
    """config (jit_compile: auto by default) -> runner.load_scorer -> the scorer's warm-up."""
    import logging

    import keras

    from adae_stream import save_detector
    from adae_stream.config import load_config
    from adae_stream.runner import load_scorer

    path = save_detector(_tiny_detector()[0], tmp_path / "tiny")
    overrides = {"detector": {"path": str(path)}, "batching": {"max_batch_size": 8, "bucket_sizes": [1, 8]}}
    with caplog.at_level(logging.INFO, logger="adae_stream.detector.scorer"):
        scorer = load_scorer(load_config(None, environ={}, overrides=overrides))
    chosen = scorer.fused.alternative_buckets
    assert chosen == [1, 8][: len(chosen)]  # a run from the smallest bucket up, whatever the timing said
    logged = [r.getMessage() for r in caplog.records if "jit_compile: auto" in r.getMessage()]
    assert len(logged) == (1 if keras.backend.backend() == "tensorflow" else 0)
