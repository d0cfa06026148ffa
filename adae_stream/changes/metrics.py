"""The change detectors' series (prometheus-client conventions: adae_ prefix, base units, _total counters):
each chart's statistic beside its threshold (nats), the alarms, and the last alarm's change time and rates."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from adae_stream.changes.charts import Fired
from adae_stream.changes.monitor import FleetMonitor

SET = ["detector", "version", "role"]
EVENT = [*SET, "stream", "event"]
CHART = [*EVENT, "odds_ratio"]


class ChangeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.statistic = Gauge(
            "adae_change_statistic",
            "Each CUSUM's statistic (nats); it alarms at adae_change_threshold.",
            CHART,
            registry=registry,
        )
        self.threshold = Gauge(
            "adae_change_threshold",
            "Each CUSUM's threshold (nats), set for the false-alarm rate of monitoring.false_alarm_every.",
            CHART,
            registry=registry,
        )
        self.alarms = Counter(
            "adae_change_alarms", "Change alarms, per detector version, role and event.", EVENT, registry=registry
        )
        self.started = Gauge(
            "adae_change_started_timestamp_seconds",
            "When the change of the last alarm began (the CUSUM's estimate: it last left 0).",
            EVENT,
            registry=registry,
        )
        self.alarmed = Gauge(
            "adae_change_alarmed_timestamp_seconds", "When the last alarm was raised.", EVENT, registry=registry
        )
        self.rate_before = Gauge(
            "adae_change_rate_before",
            "The event's rate before the last alarm's change (the baseline designed for).",
            EVENT,
            registry=registry,
        )
        self.rate_after = Gauge(
            "adae_change_rate_after",
            "The event's rate from the change's start to the last alarm.",
            EVENT,
            registry=registry,
        )
        self.baseline = Gauge(
            "adae_change_baseline_progress",
            "How far each version's warm-up baseline is (1: watched).",
            SET,
            registry=registry,
        )
        self.summaries = Counter(
            "adae_change_summaries", "Batch summaries read, by result (read, skipped).", ["result"], registry=registry
        )
        self.check_failures = Counter(
            "adae_change_check_failures", "Reads of the summaries that failed, by error.", ["error"], registry=registry
        )
        self.last_check = Gauge(
            "adae_change_last_check_timestamp_seconds", "When the summaries were last read.", registry=registry
        )
        self._charts: set[tuple[str, ...]] = set()
        self._sets: set[tuple[str, ...]] = set()

    def fired(self, fired: Fired) -> None:
        labels = (fired.detector, fired.version, fired.role, fired.stream, fired.event.split("/", 1)[1])
        self.alarms.labels(*labels).inc()
        self.started.labels(*labels).set(fired.alarm.started)
        self.alarmed.labels(*labels).set(fired.alarm.alarmed)
        self.rate_before.labels(*labels).set(fired.alarm.rate_before)
        self.rate_after.labels(*labels).set(fired.alarm.rate_after)

    def update(self, monitor: FleetMonitor) -> None:
        """Every chart's statistic and threshold now; the series of sets no longer watched go."""
        charts: set[tuple[str, ...]] = set()
        sets: set[tuple[str, ...]] = set()
        for key, chart_set in monitor.sets.items():
            sets.add(key)
            self.baseline.labels(*key).set(chart_set.progress())
            for (event, ratio), chart in chart_set.charts.items():
                labels = (*key, *event.split("/", 1), f"{ratio:g}")
                charts.add(labels)
                self.statistic.labels(*labels).set(chart.statistic)
                self.threshold.labels(*labels).set(chart.threshold)
        for labels in self._charts - charts:
            for gauge in (self.statistic, self.threshold):
                gauge.remove(*labels)
        for labels in self._sets - sets:
            self.baseline.remove(*labels)
        self._charts, self._sets = charts, sets
