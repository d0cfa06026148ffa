"""The detector repository's rules on plain directories and a fake loader (no TensorFlow): what is read,
what serves, what a failed load, a removed version and the policy do."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from adae_stream.cli.repository import describe
from adae_stream.detector.repository import (
    DetectorRepository,
    RepositoryError,
    RepositoryWatcher,
    next_version,
    read_policy,
    scan,
)
from adae_stream.scoring import ScorerInfo


class FakeScorer:
    def __init__(self, path: Path) -> None:
        config = json.loads((path / "detector.json").read_text())
        if config.get("broken"):
            raise ValueError(f"{path} is corrupt")
        self.path = path
        self.info = ScorerInfo((2,), float(config.get("threshold", 0.5)), 3, "v", config["detector_id"], "c")

    def __call__(self, x):
        return {"instance_score": x[:, 0]}

    def warmup(self, up_to=None):
        pass


def put(root: Path, name: str, version: int | str, **config) -> Path:
    d = root / name / str(version)
    d.mkdir(parents=True)
    (d / "detector.json").write_text(json.dumps({"detector_id": f"{name}{version}", "classifier_id": "c", **config}))
    return d


def repo(root: Path, failures: list[str] | None = None) -> DetectorRepository:
    return DetectorRepository(root, FakeScorer, on_load_failure=(failures if failures is not None else []).append)


def serving(r: DetectorRepository) -> dict[str, tuple[int, int | None]]:
    return {n: (d.version, d.shadow_version) for n, d in r.current().items()}


def test_scan_reads_complete_numbered_versions_only(tmp_path):
    put(tmp_path, "a", 1)
    put(tmp_path, "a", 3)
    (tmp_path / "a" / "2").mkdir()  # half-written: no detector.json yet
    put(tmp_path, "a", "0")  # versions are positive
    put(tmp_path, "a", "latest")
    (tmp_path / "a" / ".4.tmp").mkdir()  # save_detector's temp dir before its rename
    put(tmp_path, ".hidden", 1)
    (tmp_path / "notes.txt").write_text("not a detector")
    assert {n: list(v) for n, v in scan(tmp_path).items()} == {"a": [1, 3]}
    assert next_version(tmp_path, "a") == 4  # above the half-written 2 and the complete 3
    assert next_version(tmp_path, "new") == 1


def test_the_highest_version_that_loads_serves_and_a_failed_one_keeps_the_old(tmp_path):
    failures: list[str] = []
    put(tmp_path, "a", 1)
    r = repo(tmp_path, failures)
    assert r.refresh() and serving(r) == {"a": (1, None)}
    put(tmp_path, "a", 2, broken=True)
    assert not r.refresh()  # nothing changed: version 1 still serves
    assert not r.refresh()
    assert failures == ["a"]  # logged and counted once, not on every poll
    put(tmp_path, "a", 3)
    assert r.refresh() and serving(r) == {"a": (3, None)}
    assert r.changed() is not None and r.changed() is None  # handed to the loop once


def test_a_corrupt_newest_version_at_start_falls_back_to_the_one_below(tmp_path):
    put(tmp_path, "a", 1)
    put(tmp_path, "a", 2, broken=True)
    r = repo(tmp_path)
    r.refresh()
    assert serving(r) == {"a": (1, None)}


def test_policy_pins_shadows_promotes_and_rolls_back(tmp_path):
    put(tmp_path, "a", 1)
    put(tmp_path, "a", 2)
    r = repo(tmp_path)
    (tmp_path / "a" / "policy.yaml").write_text("serve: 1\nshadow: 2\n")
    r.refresh()
    assert serving(r) == {"a": (1, 2)}
    det = r.current()["a"]
    assert det.scorer.info.detector_id == "a1" and det.shadow is not None and det.shadow.info.detector_id == "a2"
    (tmp_path / "a" / "policy.yaml").write_text("serve: 2\n")  # promote
    assert r.refresh() and serving(r) == {"a": (2, None)}
    (tmp_path / "a" / "policy.yaml").write_text("serve: 1\nshadow: 2\n")  # roll back, keep watching 2
    assert r.refresh() and serving(r) == {"a": (1, 2)}


def test_policy_chooses_the_published_prediction_and_a_bad_choice_changes_nothing(tmp_path):
    put(tmp_path, "a", 1)
    r = repo(tmp_path)
    r.refresh()
    assert r.current()["a"].publish == "corrected"
    (tmp_path / "a" / "policy.yaml").write_text("publish: no_defense\nauto: false\ndecisions: [{decision: x}]\n")
    assert r.refresh() and r.current()["a"].publish == "no_defense"  # a new choice alone is a change
    for bad, why in (("publish: defense\n", "'publish' must be one of"), ("auto: 1\n", "'auto' must be true")):
        (tmp_path / "a" / "policy.yaml").write_text(bad)
        assert not r.refresh() and r.current()["a"].publish == "no_defense"
        with pytest.raises(ValueError, match=why):
            read_policy(tmp_path / "a")


def test_a_bad_policy_or_a_missing_pinned_version_changes_nothing(tmp_path):
    failures: list[str] = []
    put(tmp_path, "a", 1)
    put(tmp_path, "a", 2)
    r = repo(tmp_path, failures)
    r.refresh()
    (tmp_path / "a" / "policy.yaml").write_text("serve: [oops\n")
    assert not r.refresh() and serving(r) == {"a": (2, None)}
    (tmp_path / "a" / "policy.yaml").write_text("serve: 7\n")
    assert not r.refresh() and serving(r) == {"a": (2, None)}
    assert failures == ["a", "a"]
    with pytest.raises(ValueError, match="positive version"):
        (tmp_path / "a" / "policy.yaml").write_text("serve: -1\n")
        read_policy(tmp_path / "a")


def test_removed_versions_are_unloaded_and_a_detector_without_versions_stops_serving(tmp_path):
    v1 = put(tmp_path, "a", 1)
    v2 = put(tmp_path, "a", 2)
    put(tmp_path, "b", 1)
    r = repo(tmp_path)
    r.refresh()
    first = r.current()["a"].scorer
    for f in v2.iterdir():
        f.unlink()
    v2.rmdir()
    assert r.refresh() and serving(r) == {"a": (1, None), "b": (1, None)}
    assert r.current()["a"].scorer is not first
    assert set(r._loaded["a"]) == {1}  # version 2 is no longer held
    for f in v1.iterdir():
        f.unlink()
    v1.rmdir()
    assert r.refresh() and serving(r) == {"b": (1, None)}
    assert "a" not in r._loaded


def test_a_version_rewritten_in_place_is_loaded_again(tmp_path):
    d = put(tmp_path, "a", 1, threshold=0.5)
    r = repo(tmp_path)
    r.refresh()
    (d / "detector.json").write_text(json.dumps({"detector_id": "a1-new", "threshold": 0.7}))
    os.utime(d / "detector.json", ns=(1, 1))
    assert r.refresh() and r.current()["a"].scorer.info.detector_id == "a1-new"


def test_max_detectors_bounds_what_is_served_and_the_root_must_exist(tmp_path):
    for name in "abc":
        put(tmp_path, name, 1)
    r = DetectorRepository(tmp_path, FakeScorer, max_detectors=2)
    r.refresh()
    assert set(r.current()) == {"a", "b"}
    with pytest.raises(RepositoryError, match="not a directory"):
        DetectorRepository(tmp_path / "absent", FakeScorer)


def test_the_repository_command_lists_versions_roles_and_ids(tmp_path):
    put(tmp_path, "a", 1)
    put(tmp_path, "a", 2)
    policy = "serve: 1\nshadow: 2\npublish: no_defense\nauto: false\ndecisions: [{decision: manual, at: T}]\n"
    (tmp_path / "a" / "policy.yaml").write_text(policy)
    put(tmp_path, "b", 4)
    lines = describe(tmp_path)
    assert lines[0] == "a: serves 1, publishes no_defense, auto: false, last decision manual at T"
    assert "serving" in lines[1] and "detector_id a1 " in lines[1]
    assert "shadow" in lines[2] and "detector_id a2 " in lines[2]
    assert lines[3] == "b: serves 4, publishes corrected" and "detector_id b4 " in lines[4]


def _until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_the_watcher_polls_and_a_trigger_rereads_at_once(tmp_path):
    put(tmp_path, "a", 1)
    r = repo(tmp_path)
    r.refresh()
    polling = RepositoryWatcher(r, poll_s=0.05).start()
    try:
        put(tmp_path, "a", 2)
        assert _until(lambda: serving(r) == {"a": (2, None)})
    finally:
        polling.stop()
    triggered = RepositoryWatcher(r, poll_s=3600).start()
    try:
        put(tmp_path, "a", 3)
        triggered.trigger()  # what SIGHUP does
        assert _until(lambda: serving(r) == {"a": (3, None)})
    finally:
        triggered.stop()
