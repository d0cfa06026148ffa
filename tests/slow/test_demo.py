"""The demo's detector: a corrupt cache entry is rebuilt, not trusted; the recipe trains the same detector."""

from __future__ import annotations


def test_corrupt_cache_is_rebuilt(tmp_path):
    from adae_stream.demo.detector_cache import cache_key, load_or_train

    entry = tmp_path / f"digits-{cache_key(1, 0)}"
    entry.mkdir(parents=True)
    (entry / "detector.json").write_text("{ corrupt")
    det, path, cached = load_or_train(tmp_path, epochs=1, seed=0)
    assert not cached and path == entry and det.threshold is not None
    det2, _, cached2 = load_or_train(tmp_path, epochs=1, seed=0)
    assert cached2 and det2.threshold == det.threshold


def test_the_demo_recipe_trains_the_same_detector_every_time():
    """The demo test's premise (correction hurts on the default mix, so answers flip to the undefended
    prediction) rests on the detector. Its AE's batch order once came from an unseeded generator: four
    trainings of one recipe flagged 34-58 % of blurred digits, and one fresh-clone run in four ended with
    no decision (issue 38). Two trainings of the recipe now give the same weights, threshold and scores."""
    import numpy as np

    from adae_stream.demo.detector_cache import train_demo_detector
    from adae_stream.detector.identity import detector_identity

    first, _, held_out_first = train_demo_detector(epochs=2, seed=3)
    second, _, held_out_second = train_demo_detector(epochs=2, seed=3)
    assert detector_identity(first) == detector_identity(second)  # content hashes of every weight
    assert first.threshold == second.threshold
    np.testing.assert_array_equal(held_out_first, held_out_second)
