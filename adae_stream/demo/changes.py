"""The demo's change watch: the fleet's change detectors (changes/service.py) on this run's batch summaries,
on a thread, with the demo's incident to find. Its alarms go to the live view and the report, with their delay
from the incident's start."""

from __future__ import annotations

import threading
import time
from typing import Any

from adae_stream.changes.charts import Fired
from adae_stream.changes.metrics import ChangeMetrics
from adae_stream.changes.service import STATE_FILE, ChangeService, state_dir
from adae_stream.config import Config

DEMO_WARMUP_SHARE = 0.25  # of the demo's instances, at most: the baseline before the incident (at half the run)


def demo_monitoring(cfg: Config) -> Config:
    """A warm-up that fits in the run's first quarter, and no state from an earlier run (the demo judges its own)."""
    cfg = cfg.model_copy(deep=True)
    d = cfg.demo
    fits = int(DEMO_WARMUP_SHARE * d.rate * d.batch * d.duration_s)
    cfg.monitoring.baseline_instances = max(1000, min(cfg.monitoring.baseline_instances, fits))
    (state_dir(cfg) / STATE_FILE).unlink(missing_ok=True)
    return cfg


class ChangeWatch(threading.Thread):
    def __init__(self, cfg: Config, bootstrap: str, registry: Any | None, t0: float) -> None:
        super().__init__(name="adae-demo-changes", daemon=True)
        self.t0 = t0  # the traffic's start (time.monotonic); alarms are reported from it
        self._wall0 = time.time() - (time.monotonic() - t0)
        metrics = ChangeMetrics(registry) if registry is not None else None
        self.service = ChangeService(cfg, bootstrap, metrics, fresh="beginning")
        self.stop_event = threading.Event()

    def run(self) -> None:
        self.service.run(self.stop_event)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)
        self.service.check_or_log()  # what the last batches say
        self.service.close()

    def alarms(self) -> list[dict]:
        """The first alarm of each event, in the run's seconds: when it was raised and when its change began."""
        first: dict[str, Fired] = {}
        for f in list(self.service.alarms):
            if f.role == "serving" and f.event not in first:
                first[f.event] = f
        return [
            {
                "event": e,
                "odds_ratio": f.odds_ratio,
                "began_s": f.alarm.started - self._wall0,
                "alarmed_s": f.alarm.alarmed - self._wall0,
                "rate_before": f.alarm.rate_before,
                "rate_after": f.alarm.rate_after,
            }
            for e, f in sorted(first.items(), key=lambda kv: kv[1].alarm.alarmed)
        ]

    def warming(self) -> float:
        sets = [s for k, s in self.service.monitor.sets.items() if k[2] == "serving"]
        return min((s.progress() for s in sets), default=0.0)
