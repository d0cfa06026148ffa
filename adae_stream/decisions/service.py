"""``adae-stream decide``: the ledger read, the tests checked and policy.yaml written, every
``decisions.interval_s``; one process per repository (an exclusive lock in ``DIR/.decider/``).

Each check saves the state (totals with their ledger offsets, whose edits won) after writing the policies,
so a restart loses no evidence and repeats no decision: a decision already in policy.yaml is what is
current, and the tests say nothing new about it.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from adae_stream.config import Config
from adae_stream.decisions.decider import Decider, Decision
from adae_stream.decisions.metrics import DecisionMetrics
from adae_stream.decisions.state import LOCK_FILE, STATE_DIR, load_state, save_state
from adae_stream.errors import ConfigError
from adae_stream.feedback.ledger_reader import LedgerReader

log = logging.getLogger(__name__)


def hold_lock(root: Path) -> IO:
    """The repository's decision-maker lock, held for the life of the returned file."""
    (root / STATE_DIR).mkdir(exist_ok=True)
    handle = open(root / STATE_DIR / LOCK_FILE, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"another decision-maker already decides for {root} (it holds {STATE_DIR}/{LOCK_FILE})"
        ) from None
    return handle


def _ignore(*_args: object) -> None:
    pass


class DecisionService:
    def __init__(self, cfg: Config, bootstrap: str, metrics: DecisionMetrics | None = None) -> None:
        if not cfg.detector.repository:
            raise ConfigError("config key 'detector.repository': decisions are written into a repository's policy.yaml")
        self.root = Path(cfg.detector.repository)
        if not self.root.is_dir():
            raise ConfigError(f"config key 'detector.repository': {self.root} is not a directory")
        self.cfg = cfg
        self.metrics = metrics
        self._lock = hold_lock(self.root)
        try:
            self.state = load_state(self.root)
            self.reader = LedgerReader(cfg, bootstrap)
        except BaseException:  # a bad state file, no labels, no broker: the lock goes with the failure
            self._lock.close()
            raise
        self.decider = Decider(self.root, cfg.decisions, on_verdict=metrics.verdict if metrics else _ignore)
        log.info(
            "deciding for %s from %s (alpha %g, at least %d discordant pairs, margin %g)",
            self.root,
            self.reader.topic,
            cfg.decisions.alpha,
            cfg.decisions.min_discordant,
            cfg.decisions.margin,
        )

    def check(self) -> list[Decision]:
        """Read the ledger to its end, check every test, write and save."""
        skipped = self.state.totals.skipped
        read = self.reader.read(self.state.totals)
        decisions = self.decider.step(self.state, time.time())
        save_state(self.root, self.state)
        if self.metrics is not None:
            self.metrics.ledger_records.inc(read)
            self.metrics.ledger_skipped.inc(self.state.totals.skipped - skipped)
            self.metrics.last_check.set_to_current_time()
            for d in decisions:
                self.metrics.decisions.labels(d.detector, d.decision).inc()
        return decisions

    def run(self, stop: threading.Event, on_decisions: Callable[[list[Decision]], None] = _ignore) -> None:
        """Until ``stop``, a check every decisions.interval_s."""
        while not stop.is_set():
            self.check_or_log(on_decisions)
            stop.wait(self.cfg.decisions.interval_s)

    def check_or_log(self, on_decisions: Callable[[list[Decision]], None] = _ignore) -> None:
        """One check, its decisions handed to ``on_decisions``; a check that fails (the broker away) is
        logged, and the next one tries again."""
        try:
            on_decisions(self.check())
        except Exception:
            log.exception("checking the decisions failed; trying again in %gs", self.cfg.decisions.interval_s)

    def close(self) -> None:
        self.reader.close()
        self._lock.close()
