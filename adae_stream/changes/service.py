"""The fleet's change detectors as a service: every ``monitoring.interval_s`` the batch summaries of every
replica are read (read_committed, from where the last check stopped) into the fleet monitor, its alarms
logged and counted, and its state saved with the offsets it was read up to, in one file replaced whole: a
restart neither loses a summary nor counts one twice, and keeps every chart where it was.

Runs in ``adae-stream decide`` (the one process that already reads the whole fleet's evidence) and in the
demo; ``adae-stream backtest`` feeds the same monitor from recorded answers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from adae_stream import files
from adae_stream.changes.charts import Fired
from adae_stream.changes.metrics import ChangeMetrics
from adae_stream.changes.monitor import FleetMonitor
from adae_stream.clients import Consumer, ConsumerRecord
from adae_stream.config import Config
from adae_stream.errors import ConfigError
from adae_stream.feedback.summaries import decode_summary
from adae_stream.feedback.tail import ResumingReader

log = logging.getLogger(__name__)

STATE_FILE = "changes.json"
LOCK_FILE = "changes.lock"
REPOSITORY_STATE_DIR = ".decider"  # beside the decision-maker's state (decisions/state.py)


def state_dir(cfg: Config) -> Path:
    return (
        Path(cfg.detector.repository) / REPOSITORY_STATE_DIR
        if cfg.detector.repository
        else Path(cfg.monitoring.state_dir)
    )


def when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(fired: Fired, flagged_topic: str | None) -> str:
    """One alarm in a sentence: which stream, since when, how large, and where the flagged samples are."""
    a = fired.alarm
    where = (
        f"; flagged samples from then on are on {flagged_topic} (timestamps from {when(a.started)})"
        if flagged_topic and fired.stream == "flags"
        else ""
    )
    return (
        f"change in {fired.detector} version {fired.version} ({fired.role}), {fired.event}: rate {a.rate_before:.4f} "
        f"-> {a.rate_after:.4f} since about {when(a.started)} (alarm {a.alarmed - a.started:.0f} s later, "
        f"{a.items} instances, chart for odds x{fired.odds_ratio:g}){where}"
    )


class ChangeService:
    def __init__(
        self,
        cfg: Config,
        bootstrap: str,
        metrics: ChangeMetrics | None = None,
        consumer: Consumer | None = None,
        fresh: str = "end",
    ) -> None:
        """consumer: the summaries' reader (a stand-in in fast tests; by default read_committed). fresh: where a
        partition never read before starts (the end: a new monitor warms up on live traffic)."""
        if cfg.kafka.summary_topic is None:
            raise ConfigError("config key 'monitoring.enabled': the change detectors read kafka.summary_topic")
        self.cfg, self.metrics = cfg, metrics
        self.path = state_dir(cfg) / STATE_FILE
        self._lock: IO = files.hold_lock(state_dir(cfg) / LOCK_FILE, "change monitor")
        self._checking = threading.Lock()
        try:
            self.monitor = FleetMonitor(cfg.monitoring)
            self.offsets: dict[int, int] = {}
            self._load()
            if consumer is None:
                from adae_stream.clients.build import plain_reader

                consumer = plain_reader(
                    cfg.kafka, bootstrap, client_id=f"{cfg.kafka.client_id}-monitor", isolation_level="read_committed"
                )
            self.reader = ResumingReader(consumer, cfg.kafka.summary_topic, fresh)
        except BaseException:
            self._lock.close()
            raise
        self.alarms: list[Fired] = []  # every alarm of this process, in order (the demo's report)

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            d = json.loads(self.path.read_text())
            self.offsets = {int(p): int(o) for p, o in d["offsets"].items()}
            self.monitor.restore(d["monitor"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"the change monitor's state {self.path} is unreadable ({exc}); move it away to start afresh"
            ) from None

    def _save(self) -> None:
        state = {"offsets": {str(p): o for p, o in sorted(self.offsets.items())}, "monitor": self.monitor.to_json()}
        files.replace_text(self.path, json.dumps(state))

    def check(self) -> list[Fired]:
        """Read the summaries to their end, feed the charts, save; the alarms raised."""
        with self._checking:
            fired: list[Fired] = []
            skipped = 0

            def take(rec: ConsumerRecord) -> None:
                nonlocal skipped
                try:
                    summary = decode_summary(rec.value)
                except ValueError as exc:
                    skipped += 1
                    log.warning("summary %s-%d@%d skipped: %s", rec.topic, rec.partition, rec.offset, exc)
                    return
                fired.extend(self.monitor.feed(summary))

            read = self.reader.read(self.offsets, take)
            gone = self.monitor.forget_idle()
            if read or gone:
                self._save()
            for f in fired:
                log.warning("%s", describe(f, self.cfg.kafka.flagged_topic))
                self.alarms.append(f)
            if self.metrics is not None:
                self.metrics.summaries.labels("read").inc(read - skipped)
                self.metrics.summaries.labels("skipped").inc(skipped)
                for f in fired:
                    self.metrics.fired(f)
                self.metrics.update(self.monitor)
                self.metrics.last_check.set_to_current_time()
            return fired

    def check_or_log(self) -> bool:
        try:
            self.check()
            return True
        except Exception as exc:  # the broker away, a full disk: the next check tries again from the saved state
            if self.metrics is not None:
                self.metrics.check_failures.labels(type(exc).__name__).inc()
            log.exception("reading the batch summaries failed (%s: %s); trying again", type(exc).__name__, exc)
            return False

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            self.check_or_log()
            stop.wait(max(0.0, self.cfg.monitoring.interval_s - (time.monotonic() - started)))

    def close(self) -> None:
        with self._checking:
            self.reader.close()
            self._lock.close()


def rebaseline_saved(cfg: Config, detector: str) -> int:
    """The saved monitor's chart sets of ``detector`` warm up again (with the monitor stopped: its lock is
    taken). Returns how many."""
    lock = files.hold_lock(state_dir(cfg) / LOCK_FILE, "change monitor")
    try:
        path = state_dir(cfg) / STATE_FILE
        if not path.exists():
            return 0
        d = json.loads(path.read_text())
        monitor = FleetMonitor(cfg.monitoring)
        monitor.restore(d["monitor"])
        n = monitor.rebaseline(detector)
        d["monitor"] = monitor.to_json()
        files.replace_text(path, json.dumps(d))
        return n
    finally:
        lock.close()
