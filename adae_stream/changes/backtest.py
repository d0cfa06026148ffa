"""Backtesting: the fleet's change detectors run over recorded answers, to see when each would have alarmed
(and with what estimated change time) before tuning ``monitoring.*`` on live traffic.

An answer carries what a batch summary counts: each instance's flag, its score (``return_instance_score``)
and the undefended prediction (``return_all_predictions``; else the published one). Each answer becomes one
summary, in the order recorded, and feeds the same FleetMonitor as ``adae-stream decide``, so the alarms are
those the service would have raised on that traffic (summaries per answer rather than per batch: the charts
are checked a little more often, which the ARL allows, cusum.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from adae_stream.changes.charts import Fired
from adae_stream.changes.monitor import FleetMonitor
from adae_stream.config import MonitoringConfig
from adae_stream.feedback.summaries import Summary, summarize
from adae_stream.scoring import INSTANCE_SCORE, IS_ADVERSARIAL, NO_DEFENSE, PREDICTION


@dataclass
class Backtest:
    answers: int
    instances: int
    alarms: list[Fired]
    first_t: float | None
    last_t: float | None
    monitor: FleetMonitor


def answer_summary(answer: dict[str, Any], t: float, edges: tuple[float, float] | None, detector: str) -> Summary:
    """One answer's counts as one summary (the detector and version from the answer's model name and version,
    where its format carries them)."""
    flags = np.asarray(answer[IS_ADVERSARIAL], bool)
    scores = answer.get(INSTANCE_SCORE)
    classes = answer.get(NO_DEFENSE, answer.get(PREDICTION))
    summary = summarize(
        str(answer.get("model_name") or detector),
        str(answer.get("model_version") or "1"),
        "serving",
        t,
        np.zeros(len(flags)) if scores is None else np.asarray(scores, np.float64),
        flags,
        np.zeros(0, np.int64) if classes is None else np.asarray(classes),
        None if scores is None else edges,
    )
    return summary


def backtest(
    cfg: MonitoringConfig,
    answers: Iterable[tuple[float, dict[str, Any]]],
    edges: tuple[float, float] | None,
    detector: str = "detector",
) -> Iterator[Fired | Backtest]:
    """Yields each alarm as it is raised, then the run's totals."""
    monitor = FleetMonitor(cfg)
    alarms: list[Fired] = []
    n = instances = 0
    first = last = None
    for t, answer in answers:
        summary = answer_summary(answer, t, edges, detector)
        n += 1
        instances += summary.n
        first = t if first is None else first
        last = t
        for fired in monitor.feed(summary):
            alarms.append(fired)
            yield fired
    yield Backtest(n, instances, alarms, first, last, monitor)
