"""The demo's decision thread (DecisionService.run on a thread): a check that fails is counted and logged
with its cause, never silent; checks never overlap (the ledger reader's consumer is not thread-safe), even
when the demo stops while one is under way; and two writers never share a temporary file. Each shown by a
deliberate failure: a reader that raises, a reader that blocks (issue 38, item 3)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from adae_stream.config import load_config
from adae_stream.demo import decisions as demo_decisions
from adae_stream.demo.decisions import DemoDecider
from adae_stream.feedback.ledger import Totals
from adae_stream.files import replace_text
from tests.waiting import wait_for


def config(tmp_path: Path):
    root = tmp_path / "repo"
    (root / "a" / "1").mkdir(parents=True)
    (root / "a" / "1" / "detector.json").write_text(json.dumps({"meta": {}}))
    overrides = {
        "kafka": {"bootstrap_servers": "memory:0", "output_topic": "out", "feedback_topic": "labels"},
        "detector": {"repository": str(root)},
        "decisions": {"interval_s": 0.01},
        "metrics": {"enabled": False},
    }
    return load_config(None, environ={}, overrides=overrides)


class Reader:
    """A ledger reader that raises, or blocks until released; it counts the reads under way at once."""

    topic = "out-evidence"

    def __init__(self, raises: BaseException | None = None, blocks: bool = False) -> None:
        self.raises, self.blocks = raises, blocks
        self.release = threading.Event()
        self.calls = self.inside = self.most_at_once = 0
        self._lock = threading.Lock()

    def read(self, totals: Totals, timeout_s: float = 10.0) -> int:
        with self._lock:
            self.calls += 1
            self.inside += 1
            self.most_at_once = max(self.most_at_once, self.inside)
        try:
            if self.blocks:
                self.release.wait(30)
            if self.raises is not None:
                raise self.raises
            return 0
        finally:
            with self._lock:
                self.inside -= 1

    def skip_to_end(self, totals: Totals) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_check_that_fails_is_counted_and_logged_with_its_cause(tmp_path, caplog):
    reader = Reader(raises=RuntimeError("the broker is away"))
    decider = DemoDecider(config(tmp_path), "memory:0", reader=reader)
    decider.start()
    wait_for(lambda: decider.failed_checks().get("RuntimeError", 0) >= 2, 10, "two failed checks counted")
    decider.stop()
    assert decider.failed_checks()["RuntimeError"] == reader.calls  # every one, the last check's too
    assert "checking the decisions failed (RuntimeError: the broker is away)" in caplog.text
    assert decider.standing()["failed_checks"] == {"RuntimeError": reader.calls}


class WatchedLock:
    """The service's one-check-at-a-time lock, counting who tried to take it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.attempts = 0

    def __enter__(self) -> WatchedLock:
        self.attempts += 1
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def blocked_decider(tmp_path: Path) -> tuple[DemoDecider, Reader, WatchedLock]:
    reader, lock = Reader(blocks=True), WatchedLock()
    decider = DemoDecider(config(tmp_path), "memory:0", reader=reader)
    decider.service._checking = lock  # type: ignore[assignment]
    decider.start()
    wait_for(lambda: reader.inside == 1, 10, "the thread's check reading the ledger")
    return decider, reader, lock


def test_stop_runs_the_last_check_after_the_one_under_way(tmp_path):
    decider, reader, _ = blocked_decider(tmp_path)
    stopping = threading.Thread(target=decider.stop)
    stopping.start()
    wait_for(decider.stop_event.is_set, 10, "stop() under way")
    assert reader.calls == 1  # stop() waits for the thread: the last check has not started
    reader.release.set()
    stopping.join(30)
    assert not stopping.is_alive() and reader.calls == 2 and reader.most_at_once == 1


def test_the_last_check_waits_for_the_one_under_way_when_stop_stops_waiting_for_the_thread(tmp_path, monkeypatch):
    """A ledger read can take its whole 10 s budget: stop() gives up waiting for the thread, and its last
    check then waits for the check under way instead of running beside it on the same consumer."""
    monkeypatch.setattr(demo_decisions, "STOP_WAIT_S", 0.01)
    decider, reader, lock = blocked_decider(tmp_path)
    stopping = threading.Thread(target=decider.stop)
    stopping.start()
    wait_for(lambda: lock.attempts == 2 or reader.calls == 2, 10, "the last check started")
    assert reader.calls == 1 and reader.most_at_once == 1  # it waits at the lock, not in a second read
    reader.release.set()
    stopping.join(30)
    assert not stopping.is_alive() and reader.calls == 2 and reader.most_at_once == 1


def test_two_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    """Both checks once saved through the same state.<pid>.tmp: one could rename the other's half-written
    file. Here two threads write one file 200 times each: every read shows one writer's whole text."""
    path = tmp_path / "state.json"
    texts = {"a": json.dumps({"w": "a" * 50_000}), "b": json.dumps({"w": "b" * 50_000})}
    replace_text(path, texts["a"])
    seen: set[str] = set()

    def write(key: str) -> None:
        for _ in range(200):
            replace_text(path, texts[key])
            seen.add(path.read_text())

    threads = [threading.Thread(target=write, args=(k,)) for k in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen <= set(texts.values()) and not list(tmp_path.glob("*.tmp"))
