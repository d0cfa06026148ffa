"""The fleet's change detectors: every replica's batch summaries, in whatever order they arrive, feed one
chart set per detector version and role (charts.py). Under no change the order of independent items does not
matter, and one set for the fleet keeps one false-alarm rate however many replicas there are, with the delay
of the fleet's total traffic (shared/reference/change-detection.md, "Fleets")."""

from __future__ import annotations

import logging

from adae_stream.changes.charts import ChartSet, Fired
from adae_stream.config import MonitoringConfig
from adae_stream.feedback.summaries import Summary

log = logging.getLogger(__name__)

FORGET_S = 3600.0  # a version with no summary for this long (by the summaries' own clock) is no longer watched

Key = tuple[str, str, str]  # detector, version, role


class FleetMonitor:
    def __init__(self, cfg: MonitoringConfig) -> None:
        self.cfg = cfg
        self.sets: dict[Key, ChartSet] = {}
        self.newest_t = 0.0

    def _new_set(self, key: Key) -> ChartSet:
        c = self.cfg
        return ChartSet(
            key, c.false_alarm_every, c.baseline_instances, c.baseline_confidence, c.odds_ratios, c.min_rate
        )

    def feed(self, summary: Summary) -> list[Fired]:
        key = (summary.detector, summary.version, summary.role)
        charts = self.sets.get(key)
        if charts is None:
            charts = self.sets[key] = self._new_set(key)
            log.info("watching %s version %s (%s) after a warm-up of %d instances", *key, self.cfg.baseline_instances)
        was_ready = charts.ready
        fired = charts.add(summary.events(), summary.n, summary.t)
        if charts.ready and not was_ready:
            log.info(
                "%s version %s (%s): baseline of %d instances at %.1f/s, %d charts: %s",
                *key,
                charts.baseline.items,
                charts.instances_per_s,
                len(charts.charts),
                ", ".join(sorted({f"{e} {c.design.p0:.4f}" for (e, _), c in charts.charts.items()})),
            )
        self.newest_t = max(self.newest_t, summary.t)
        return fired

    def forget_idle(self) -> list[Key]:
        gone = [k for k, s in self.sets.items() if s.last_t < self.newest_t - FORGET_S]
        for key in gone:
            del self.sets[key]
        return gone

    def rebaseline(self, detector: str) -> int:
        """A person says the present is the new normal: the detector's sets warm up again."""
        keys = [k for k in self.sets if k[0] == detector]
        for key in keys:
            self.sets[key] = self._new_set(key)
        return len(keys)

    def to_json(self) -> dict:
        return {"newest_t": self.newest_t, "sets": [s.to_json() for s in self.sets.values()]}

    def restore(self, d: dict) -> None:
        self.newest_t = float(d.get("newest_t", 0.0))
        self.sets = {}
        for item in d.get("sets", []):
            key: Key = (str(item["key"][0]), str(item["key"][1]), str(item["key"][2]))
            charts = self._new_set(key)
            charts.restore(item)
            self.sets[key] = charts
