"""The decision-maker killed at every write point of its checks, then restarted from what it left on disk:
its policy.yaml (with the decisions recorded in it) and its state end as an uninterrupted run's.

A check writes three kinds of file, each replaced whole (adae_stream/files.py): the state with its intent,
each policy it changes, the state again. Every replacement is a write point, and the kill comes just before
it or just after it (injected: the replacement raises, as a SIGKILL would stop the process there). The run:
a better shadow promoted; the promoted version rolled back on probation; correction found to hurt (switch
to publishing the undefended prediction); a person's edit (publish corrected again, and the rolled-back
version offered as the shadow), accepted; and evidence for that version, which must not promote it again.
Issue 38 found, in 5 of 5 runs, the decider's own decision read back as a person's edit and the rolled-back
version promoted again after a crash between the policy write and the state's. The same holds for a write
that fails (a full disk) in a process that goes on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from adae_stream.config import load_config
from adae_stream.decisions.service import DecisionService
from adae_stream.decisions.state import state_path
from adae_stream.feedback.evidence import Counts, PairedEvidence
from adae_stream.feedback.ledger import encode_evidence
from adae_stream.feedback.ledger_reader import LedgerReader
from tests.stand_ins import MemoryBroker, StandInConsumer

NOW = 1_800_000_000.0
LEDGER = "out-evidence"


class Killed(BaseException):
    """The process stopping at a write point (a BaseException: no `except Exception` of the service sees it)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)


def versions(a: int, b: int, counts: Counts) -> PairedEvidence:
    return PairedEvidence("versions", "a", str(a), str(b), counts)


# each step: evidence added to the ledger, a person's edit of policy.yaml (or None), then one check
STEPS = [
    ([versions(1, 2, Counts(80, 20, 900, 1000, 5))], None),  # the shadow is better: promoted
    ([versions(2, 1, Counts(90, 10, 900, 1000, 5))], None),  # on probation, the old one is better: rollback
    ([PairedEvidence("defense", "a", "1", "1", Counts(10, 80, 900))], None),  # correction hurts: switch
    ([], {"publish": "corrected", "shadow": 2}),  # a person: publish corrected, and version 2 as the shadow
    ([versions(1, 2, Counts(80, 20, 900, 1000, 5))], None),  # rolled back before: never promoted again
]


def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for v in (1, 2):
        d = root / "a" / str(v)
        d.mkdir(parents=True)
        (d / "detector.json").write_text(json.dumps({"meta": {"calibration": {"fpr_upper_bound": 0.02}}}))
        (d / ".complete").write_text("")
    (root / "a" / "policy.yaml").write_text("serve: 1\nshadow: 2\n")
    return root


class Run:
    """The decision-maker over a stand-in ledger, restarted (a new service on the same files) after a kill."""

    def __init__(self, root: Path) -> None:
        self.root, self.broker = root, MemoryBroker()
        overrides = {
            "kafka": {"bootstrap_servers": "memory:0", "output_topic": "out", "feedback_topic": "labels"},
            "detector": {"repository": str(root)},
            "decisions": {"min_discordant": 30, "probation_instances": 100_000, "guard_min_instances": 100},
            "metrics": {"enabled": False},
        }
        self.cfg = load_config(None, environ={}, overrides=overrides)
        self.service = self._start()
        self.kills = 0

    def _start(self) -> DecisionService:
        reader = LedgerReader(self.cfg, "memory:0", StandInConsumer(self.broker, read_committed=True))
        return DecisionService(self.cfg, "memory:0", reader=reader, clock=lambda: NOW)

    def step(self, evidence: list[PairedEvidence], edit: dict | None) -> None:
        for e in evidence:
            self.broker.produce(LEDGER, encode_evidence([e]), b"a")
        if edit is not None:  # the controls changed, the rest of the file kept
            path = self.root / "a" / "policy.yaml"
            path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **edit}, sort_keys=False))
        try:
            self.service.check()
        except Killed:
            self.kills += 1
            self.service._lock.close()  # the kernel releases a dead process's lock
            self.service = self._start()  # the restart; its loop checks again
            self.service.check()
        except OSError:  # a write failed in a process that goes on: its loop checks again
            self.kills += 1
            self.service.check()

    def outcome(self) -> tuple[str, dict]:
        return (self.root / "a" / "policy.yaml").read_text(), json.loads(state_path(self.root).read_text())


def run(
    tmp_path: Path, monkeypatch, kill_at: int | None = None, after: bool = False, fault: type = Killed
) -> tuple[Run, int]:
    """The whole scenario; with ``kill_at``, ``fault`` raised at that replacement (counted from 1), before it
    or after it: Killed stops the process there, OSError (a full disk) fails the write in a process that
    goes on. Returns the run and how many replacements it made."""
    calls = 0
    replace = os.replace

    def replacing(src, dst):
        nonlocal calls
        calls += 1
        if calls == kill_at and not after:
            raise fault("injected")
        replace(src, dst)
        if calls == kill_at and after:
            raise fault("injected")

    r = Run(repository(tmp_path))
    monkeypatch.setattr(os, "replace", replacing)
    for evidence, edit in STEPS:
        r.step(evidence, edit)
    monkeypatch.setattr(os, "replace", replace)
    return r, calls


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        r, calls = run(tmp_path_factory.mktemp("uninterrupted"), mp)
    finally:
        mp.undo()
    policy, state = r.outcome()
    decided = [d["decision"] for d in yaml.safe_load(policy)["decisions"]]
    assert decided == ["promote", "rollback", "publish_no_defense", "manual"]  # the scenario does what it says
    assert state["detectors"]["a"]["rejected"] == [2] and "intent" not in state
    return policy, state, calls


def test_each_deciding_check_has_three_write_points_and_any_other_one(uninterrupted):
    _, _, calls = uninterrupted
    assert calls == 3 * 4 + 1  # the state with its intent, the policy, the state: 4 checks decide; the 5th saves


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_a_kill_at_any_write_point_ends_as_an_uninterrupted_run(uninterrupted, tmp_path, monkeypatch, after):
    policy, state, calls = uninterrupted
    for kill_at in range(1, calls + 1):
        r, _ = run(tmp_path / f"kill-{kill_at}", monkeypatch, kill_at, after)
        assert r.kills == 1, kill_at
        assert r.outcome() == (policy, state), f"killed {'after' if after else 'before'} write {kill_at}"


def test_a_write_that_fails_in_a_process_that_goes_on_ends_as_an_uninterrupted_run(
    uninterrupted, tmp_path, monkeypatch
):
    """A full disk at any write point (the replacement refused, nothing written): the check fails, the
    process goes on, and its next check decides again; before, a failed policy write left the state as if
    it had been written, and the next check read the decision-maker's own decision as a person's edit."""
    policy, state, calls = uninterrupted
    for fail_at in range(1, calls + 1):
        r, _ = run(tmp_path / f"fail-{fail_at}", monkeypatch, fail_at, after=False, fault=OSError)
        assert r.kills == 1, fail_at
        assert r.outcome() == (policy, state), f"write {fail_at} failed"
