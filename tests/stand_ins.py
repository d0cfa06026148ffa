"""Stand-ins for what the loop talks to, for tests without a broker: a producer whose futures are
kafka-python's own (acked, or failed with the error a real client or broker gives), and metrics that
record every call of the contract (adae_stream.stream.telemetry.Metrics)."""

from __future__ import annotations

import inspect
from collections import defaultdict
from typing import Any

from kafka.future import Future

from adae_stream.stream.telemetry import Metrics


class Producer:
    """Records each send; `fail(topic, n)` makes the next n sends to topic fail with an error."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.failures: dict[str, list[BaseException]] = {}
        self.raise_at_send: dict[str, BaseException] = {}

    def send(self, topic, value=None, key=None, headers=None, partition=None):
        if topic in self.raise_at_send:
            raise self.raise_at_send.pop(topic)
        future = Future()
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers, "future": future})
        errors = self.failures.get(topic)
        if errors:
            future.failure(errors.pop(0))
        return future

    def ack_all(self) -> None:
        for s in self.sent:
            if not s["future"].is_done:
                s["future"].success(None)

    def partitions_for(self, topic):
        return {0, 1, 2}

    def flush(self, timeout=None):
        self.ack_all()

    def topics(self) -> list[str]:
        return [s["topic"] for s in self.sent]

    def to(self, topic: str) -> list[dict]:
        """The records sent to ``topic`` and acked."""
        return [s for s in self.sent if s["topic"] == topic and s["future"].succeeded()]


METRICS_METHODS = tuple(name for name in vars(Metrics) if not name.startswith("_") and callable(getattr(Metrics, name)))


class RecordingMetrics:
    """Every call of the metrics contract, by method name, with all its arguments in the contract's order."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[Any, ...]]] = defaultdict(list)

    def __getattr__(self, name: str) -> Any:
        if name not in METRICS_METHODS:
            raise AttributeError(name)

        signature = inspect.signature(getattr(Metrics, name))

        def record(*args: Any, **kwargs: Any) -> None:  # every argument in the contract's order, defaults too
            bound = signature.bind(None, *args, **kwargs)
            bound.apply_defaults()
            self.calls[name].append(bound.args[1:])

        return record
