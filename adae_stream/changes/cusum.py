"""Page's CUSUM for a proportion with integer weights, and its exact average run length.

From a pre-change rate p0 to p1, each item adds log(p1/p0) when the event happens and log((1-p1)/(1-p0))
when it does not; S = max(0, S + increment) and S >= h alarms (Page 1954; Reynolds & Stoumbos 1999 for the
Bernoulli case). Scaled and rounded to integers (+up / -down), the chart is a finite Markov chain on the
states 0..h-1, and its average run length (ARL) from 0 solves (I - P) L = 1 exactly (Brook & Evans 1972).
I - P is banded (up steps above the diagonal, down steps below), so LAPACK's banded solver takes about a
millisecond for the few thousand states of the finest chart the service builds.

Guarantee: if the events are independent with a rate at most p0, the chart checked after every item raises its
first false alarm after ``arl(design)`` items on average, and after batches (the service checks after each
summary) at least that, because max(0, .) applied at fewer points never gives a larger statistic.

The time the statistic last left 0 estimates when the change began (``Chart.started``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_DOWN = 64  # the down weight tried up to this, for an up/down ratio within RATIO_TOLERANCE of the design's
RATIO_TOLERANCE = 0.02
MAX_STATES = 4000  # a threshold of about this many units at most: each ARL is a banded solve of that size


@dataclass(frozen=True)
class Design:
    """One chart's design: the rates it was built for, its integer weights, the nats per unit, its threshold
    in units and the exact ARL (items) that threshold gives."""

    p0: float
    p1: float
    up: int
    down: int
    unit: float  # nats per integer unit
    h: int
    arl: float

    def to_json(self) -> dict:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, d: dict) -> Design:
        return cls(**d)


def weights(p0: float, p1: float, target_arl: float) -> tuple[int, int, float]:
    """Integer (up, down) in the ratio of log(p1/p0) to -log((1-p1)/(1-p0)), and the nats per unit: the
    smallest down within RATIO_TOLERANCE of the ratio, with units no finer than MAX_STATES states to a
    threshold of about log(target_arl) nats (a rare event's fall is coarser than its ratio then: the chart
    drifts down a little faster, and its ARL is still computed exactly)."""
    if not 0.0 < p0 < p1 < 1.0:
        raise ValueError(f"a CUSUM for a rise needs 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")
    rise, fall = math.log(p1 / p0), -math.log((1.0 - p1) / (1.0 - p0))
    finest = (math.log(max(target_arl, 2.0)) + 2.0) / MAX_STATES
    best: tuple[float, int, int, float] | None = None
    for down in range(1, MAX_DOWN + 1):
        unit = max(fall / down, finest)
        up = max(1, round(rise / unit))
        error = abs(up * fall / (down * rise) - 1.0)
        if best is None or error < best[0]:
            best = (error, up, down, unit)
        if error <= RATIO_TOLERANCE or unit == finest:
            break
    assert best is not None
    _, up, down, unit = best
    return up, down, unit


def arl(p: float, up: int, down: int, h: int) -> float:
    """Average run length from 0 of the integer chart S = max(0, S + up) with probability p, else
    max(0, S - down), to S >= h: exact, from the banded system (I - P) L = 1 (LAPACK's banded solver)."""
    if h <= 0:
        return 1.0
    from scipy.linalg import solve_banded

    q = 1.0 - p
    band = np.zeros((up + down + 1, h))  # band[up + i - j, j] = (I - P)[i, j]
    band[up, :] = 1.0
    states = np.arange(h)
    to = np.maximum(states - down, 0)
    np.subtract.at(band, (up + states - to, to), q)
    stays = states[states + up < h]
    band[0, stays + up] -= p  # (I - P)[s, s + up]: row up + s - (s + up) = 0
    return float(solve_banded((down, up), band, np.ones(h))[0])


def design(p0: float, odds_ratio: float, target_arl: float) -> Design:
    """The chart for a rise of the odds of the event by ``odds_ratio`` from p0, with the smallest threshold
    whose exact ARL is at least ``target_arl`` items."""
    if odds_ratio <= 1.0:
        raise ValueError(f"the design odds ratio must exceed 1, got {odds_ratio}")
    odds = odds_ratio * p0 / (1.0 - p0)
    p1 = odds / (1.0 + odds)
    up, down, unit = weights(p0, p1, target_arl)
    lo, hi = 1, max(2, int(math.log(max(target_arl, 2.0)) / unit))  # log(ARL) nats: about the threshold
    while arl(p0, up, down, hi) < target_arl:
        if hi > 4 * MAX_STATES:
            raise ValueError(f"no chart for p0={p0:g}: its threshold would pass {4 * MAX_STATES} states")
        lo, hi = hi, hi * 2
    while lo < hi:  # the smallest h with ARL >= target (ARL grows with h)
        mid = (lo + hi) // 2
        if arl(p0, up, down, mid) >= target_arl:
            hi = mid
        else:
            lo = mid + 1
    return Design(p0, p1, up, down, unit, lo, arl(p0, up, down, lo))


@dataclass
class Alarm:
    """A chart crossed its threshold: when the change began (the statistic last left 0), when it was seen, and
    the rate before (the design's p0) and after (events over items since it began)."""

    started: float
    alarmed: float
    rate_before: float
    rate_after: float
    items: int  # since it began


@dataclass
class Chart:
    """One CUSUM, updated with the counts of a batch: S = max(0, S + up * events - down * non-events)."""

    design: Design
    s: int = 0
    started: float | None = None  # when the current excursion above 0 began
    events: int = 0  # since then
    items: int = 0

    def update(self, events: int, items: int, t: float) -> Alarm | None:
        s = self.s + self.design.up * events - self.design.down * (items - events)
        if s <= 0:
            self.s, self.started, self.events, self.items = 0, None, 0, 0
            return None
        if self.s == 0:
            self.started = t
        self.s = s
        self.events += events
        self.items += items
        if s < self.design.h:
            return None
        alarm = Alarm(
            self.started if self.started is not None else t,
            t,
            self.design.p0,
            self.events / max(1, self.items),
            self.items,
        )
        self.s, self.started, self.events, self.items = 0, None, 0, 0  # restarted: an ongoing change alarms again
        return alarm

    @property
    def statistic(self) -> float:
        """In nats."""
        return self.s * self.design.unit

    @property
    def threshold(self) -> float:
        return self.design.h * self.design.unit

    def to_json(self) -> dict:
        return {
            "design": self.design.to_json(),
            "s": self.s,
            "started": self.started,
            "events": self.events,
            "items": self.items,
        }

    @classmethod
    def from_json(cls, d: dict) -> Chart:
        return cls(Design.from_json(d["design"]), d["s"], d["started"], d["events"], d["items"])
