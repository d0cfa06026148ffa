"""``adae-stream decide``: the ledger read, the tests checked and policy.yaml written, every
``decisions.interval_s``; one process per repository (an exclusive lock in ``DIR/.decider/``).

Each check saves the state (totals with their ledger offsets, whose edits won) around writing the policies,
with what it is about to write saved first (state.py), so a restart at any point loses no evidence and
repeats or forgets no decision.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from adae_stream import files
from adae_stream.config import Config
from adae_stream.decisions.decider import Decider, Decision, PolicyWrite
from adae_stream.decisions.metrics import DecisionMetrics
from adae_stream.decisions.state import (
    LOCK_FILE,
    STATE_DIR,
    DeciderState,
    DetectorState,
    Intent,
    digest,
    load_state,
    save_state,
    settle_intent,
)
from adae_stream.detector.repository import replace_policy
from adae_stream.errors import ConfigError
from adae_stream.feedback.ledger_reader import LedgerReader

log = logging.getLogger(__name__)

STANDING_LOG_S = 60.0  # how often a check that decides nothing says where the tests stand (INFO)


def hold_lock(root: Path) -> IO:
    """The repository's decision-maker lock, held for the life of the returned file."""
    return files.hold_lock(root / STATE_DIR / LOCK_FILE, "decision-maker")


def _ignore(*_args: object) -> None:
    pass


def decide(
    root: Path,
    decider: Decider,
    state: DeciderState,
    now: float,
    written: Callable[[list[Decision]], None] = _ignore,
) -> list[Decision]:
    """Check every test and write what they decide: the state with its intent first, then each policy,
    then the state again (state.py says why). ``written`` gets the decisions whose policies were written,
    before the last save, so that they are reported whatever fails after; a write that fails leaves the
    state as a restart would find it (its detector as before), not as if it had been written. Returns them."""
    before = {name: copy.deepcopy(ds) for name, ds in state.detectors.items()}
    writes = decider.step(state, now)
    if writes:
        state.intent = Intent(
            {w.detector: (digest(w.before), digest(w.after)) for w in writes},
            {w.detector: before.get(w.detector) for w in writes},
        )
    decisions: list[Decision] = []
    try:
        if writes:
            save_state(root, state)
        for w in writes:
            if _write(root, state, w, before.get(w.detector)):
                decisions += w.decisions
    except Exception:  # a write failed (a full disk): settled here as a restart would, then reported
        if state.intent is not None:
            settle_intent(root, state)
        written(decisions)
        raise
    written(decisions)
    state.intent = None
    save_state(root, state)
    return decisions


def _write(root: Path, state: DeciderState, write: PolicyWrite, previous: DetectorState | None) -> bool:
    if replace_policy(root / write.detector, write.after, write.before):
        return True
    name = write.detector
    log.warning("policy.yaml of %s changed while deciding: nothing written; checked again next time", name)
    state.undo(name, previous)
    return False


class DecisionService:
    def __init__(
        self,
        cfg: Config,
        bootstrap: str,
        metrics: DecisionMetrics | None = None,
        reader: LedgerReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """reader: the ledger's (by default a read_committed reader of kafka.evidence_topic)."""
        if not cfg.detector.repository:
            raise ConfigError("config key 'detector.repository': decisions are written into a repository's policy.yaml")
        self.root = Path(cfg.detector.repository)
        if not self.root.is_dir():
            raise ConfigError(f"config key 'detector.repository': {self.root} is not a directory")
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock
        self._checking = threading.Lock()  # one check at a time: the reader's consumer is not thread-safe
        self._standing_logged = -float("inf")
        self._lock = hold_lock(self.root)
        try:
            self.state = load_state(self.root)
            self.reader = reader or LedgerReader(cfg, bootstrap)
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

    def check(self, on_decisions: Callable[[list[Decision]], None] = _ignore) -> list[Decision]:
        """Read the ledger to its end, check every test, and write what they decide (``decide``). The
        decisions written are reported (counted, ``on_decisions``) as soon as their policies are."""
        with self._checking:
            skipped = self.state.totals.skipped
            read = self.reader.read(self.state.totals)
            return decide(
                self.root,
                self.decider,
                self.state,
                self.clock(),
                lambda decisions: self._report(read, self.state.totals.skipped - skipped, decisions, on_decisions),
            )

    def _report(
        self, read: int, skipped: int, decisions: list[Decision], on_decisions: Callable[[list[Decision]], None]
    ) -> None:
        if self.metrics is not None:
            self.metrics.ledger_records.inc(read)
            self.metrics.ledger_skipped.inc(skipped)
            self.metrics.last_check.set_to_current_time()
            for d in decisions:
                self.metrics.decisions.labels(d.detector, d.decision).inc()
        if decisions:
            on_decisions(decisions)
        elif time.monotonic() - self._standing_logged > STANDING_LOG_S:  # why nothing is decided, now and then
            self._standing_logged = time.monotonic()
            log.info("no decision yet (alpha %g per test): %s", self.cfg.decisions.alpha, self.decider.standing())

    def run(self, stop: threading.Event, on_decisions: Callable[[list[Decision]], None] = _ignore) -> None:
        """Until ``stop``, a check every decisions.interval_s."""
        while not stop.is_set():
            self.check_or_log(on_decisions)
            stop.wait(self.cfg.decisions.interval_s)

    def check_or_log(self, on_decisions: Callable[[list[Decision]], None] = _ignore) -> bool:
        """One check; one that fails (the broker away, a disk full) is logged with its cause and counted
        (adae_decision_check_failures_total), and the next one tries again. Returns whether it succeeded."""
        try:
            self.check(on_decisions)
            return True
        except Exception as exc:
            if self.metrics is not None:
                self.metrics.check_failures.labels(type(exc).__name__).inc()
            log.exception(
                "checking the decisions failed (%s: %s); trying again in %gs",
                type(exc).__name__,
                exc,
                self.cfg.decisions.interval_s,
            )
            return False

    def close(self) -> None:
        """After the check under way, if any."""
        with self._checking:
            self.reader.close()
            self._lock.close()
