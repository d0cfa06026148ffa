"""One detector version's charts (serving or shadow): its warm-up baseline, then a Bernoulli CUSUM per event
and design rise, with the false alarms shared out so that the whole set meets ``false_alarm_every``.

The baseline: the first ``baseline_instances`` of live traffic this version scored, fleet-wide (not the
calibration in detector.json: live data differ from any calibration set, and a chart built on the wrong rate
alarms for ever). Each event's rate designed for is the upper confidence bound of its warm-up estimate
(Wilson, at ``baseline_confidence``), so a rate estimated low by chance still meets the ARL: the guarantee
holds with that confidence for each chart (Jones, Champ & Rigdon 2004 show what a plain estimate costs).

The share: flags take half of the set's false-alarm budget, the score shape a quarter, the class mix a quarter
(what a stream lacks goes to the others), split evenly over its events and design rises. After a renewal
(restart at every alarm), each chart's long-run false alarms per item are 1/ARL, so the set's sum to at most
1 / (false_alarm_every x the warm-up's instances per second).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist

from adae_stream.changes.cusum import Alarm, Chart, design

STREAM_SHARES = {"flags": 0.5, "score": 0.25, "classes": 0.25}


def upper_bound(events: int, items: int, confidence: float) -> float:
    """Wilson's upper confidence bound for a proportion."""
    z = NormalDist().inv_cdf(confidence)
    p = events / items
    centre = p + z * z / (2 * items)
    spread = z * math.sqrt(p * (1 - p) / items + z * z / (4 * items * items))
    return min(1.0, (centre + spread) / (1 + z * z / items))


@dataclass
class Baseline:
    items: int = 0
    events: dict[str, int] = field(default_factory=dict)
    first_t: float | None = None
    last_t: float | None = None

    def add(self, counts: Mapping[str, int], items: int, t: float) -> None:
        self.items += items
        for name, k in counts.items():
            self.events[name] = self.events.get(name, 0) + k
        self.first_t = t if self.first_t is None else min(self.first_t, t)
        self.last_t = t if self.last_t is None else max(self.last_t, t)

    def rate_per_s(self) -> float:
        span = (self.last_t or 0.0) - (self.first_t or 0.0)
        return self.items / max(span, 1.0)


@dataclass
class Fired:
    """An alarm of one chart of one set."""

    detector: str
    version: str
    role: str
    event: str  # "stream/event"
    odds_ratio: float
    alarm: Alarm

    @property
    def stream(self) -> str:
        return self.event.split("/", 1)[0]


class ChartSet:
    def __init__(
        self,
        key: tuple[str, str, str],
        false_alarm_every_s: float,
        baseline_instances: int,
        confidence: float,
        odds_ratios: list[float],
        min_rate: float,
    ) -> None:
        self.key = key
        self.false_alarm_every_s = false_alarm_every_s
        self.baseline_instances = baseline_instances
        self.confidence = confidence
        self.odds_ratios = list(odds_ratios)
        self.min_rate = min_rate
        self.baseline = Baseline()
        self.charts: dict[tuple[str, float], Chart] = {}  # (event, odds ratio) -> chart
        self.ready = False
        self.instances_per_s = 0.0  # of the warm-up, fleet-wide: what false_alarm_every is converted with
        self.last_t = 0.0

    def add(self, counts: Mapping[str, int], items: int, t: float) -> list[Fired]:
        """A batch's counts (every event of the set's streams, with 0 where none happened)."""
        self.last_t = max(self.last_t, t)
        if not self.ready:
            self.baseline.add(counts, items, t)
            if self.baseline.items >= self.baseline_instances:
                self._build()
            return []
        fired = []
        for (event, ratio), chart in self.charts.items():
            alarm = chart.update(counts.get(event, 0), items, t)
            if alarm is not None:
                fired.append(Fired(*self.key, event, ratio, alarm))
        return fired

    def _build(self) -> None:
        b = self.baseline
        self.instances_per_s = b.rate_per_s()
        budget_items = self.false_alarm_every_s * self.instances_per_s
        rates = {e: upper_bound(k, b.items, self.confidence) for e, k in b.events.items()}
        watched = {e: p for e, p in rates.items() if self.min_rate <= p <= 1.0 - self.min_rate}
        streams = {e.split("/", 1)[0] for e in watched}
        total_share = sum(STREAM_SHARES[s] for s in streams) or 1.0
        per_stream = {s: sum(1 for e in watched if e.startswith(s + "/")) for s in streams}
        for event, p0 in sorted(watched.items()):
            stream = event.split("/", 1)[0]
            share = STREAM_SHARES[stream] / total_share / per_stream[stream] / len(self.odds_ratios)
            for ratio in self.odds_ratios:
                try:
                    self.charts[(event, ratio)] = Chart(design(p0, ratio, budget_items / share))
                except ValueError:  # a rise past 1, or too fine a chart: that design is left out
                    continue
        self.ready = True

    def progress(self) -> float:
        """How far the warm-up is (1 once watched)."""
        return 1.0 if self.ready else self.baseline.items / self.baseline_instances

    def to_json(self) -> dict:
        return {
            "key": list(self.key),
            "baseline": self.baseline.__dict__,
            "ready": self.ready,
            "instances_per_s": self.instances_per_s,
            "last_t": self.last_t,
            "charts": [[event, ratio, chart.to_json()] for (event, ratio), chart in self.charts.items()],
        }

    def restore(self, d: dict) -> None:
        self.baseline = Baseline(**d["baseline"])
        self.ready = bool(d["ready"])
        self.instances_per_s = float(d["instances_per_s"])
        self.last_t = float(d["last_t"])
        self.charts = {(event, float(ratio)): Chart.from_json(c) for event, ratio, c in d["charts"]}
