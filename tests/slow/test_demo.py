"""The demo's detector cache: a corrupt entry is rebuilt, not trusted."""

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
