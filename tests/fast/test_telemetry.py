"""Tallied: the pipeline's own totals are counted on the way to the metrics, never beside them."""

from __future__ import annotations

import inspect

from prometheus_client import CollectorRegistry

from adae_stream.monitoring.metrics import PipelineMetrics
from adae_stream.stream.telemetry import Metrics, Tallied
from tests.stand_ins import METRICS_METHODS, RecordingMetrics


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_totals_and_exported_metrics_are_the_same_counts() -> None:
    registry = CollectorRegistry()
    tallied = Tallied(PipelineMetrics(threshold=0.5, registry=registry))
    for status, reason in [("ok", None), ("ok", None), ("dead_letter", "shape"), ("skipped", "json_response")]:
        tallied.request_done(status, reason=reason)
    tallied.observe_batch(5, 0.01)
    tallied.observe_batch(3, 0.02)
    tallied.transaction_committed()
    tallied.set_lag("in", 0, 7)  # not counted: passed straight through
    assert (tallied["ok"], tallied["dead_letter"], tallied["skipped"]) == (2, 1, 1)
    assert (tallied["batches"], tallied["instances"], tallied["transactions"]) == (2, 8, 1)
    assert _sample(registry, "adae_requests_total", status="ok") == 2
    assert _sample(registry, "adae_dead_letter_total", reason="shape") == 1
    assert _sample(registry, "adae_batch_size_count") == 2 and _sample(registry, "adae_batch_size_sum") == 8
    assert _sample(registry, "adae_transactions_total") == 1
    assert _sample(registry, "adae_consumer_lag", topic="in", partition="0") == 7


def test_tallied_forwards_every_method_of_the_contract_with_its_arguments() -> None:
    """Tallied has no __getattr__: each method of Metrics is written out (so mypy checks it against the
    protocol), and each must reach the metrics underneath with the same arguments."""
    recording = RecordingMetrics()
    tallied = Tallied(recording)  # type: ignore[arg-type]
    for i, name in enumerate(METRICS_METHODS):
        parameters = list(inspect.signature(getattr(Metrics, name)).parameters)[1:]
        args = tuple(100 * i + k for k in range(len(parameters)))  # a distinct value per argument
        getattr(tallied, name)(*args)
        assert recording.calls[name] == [args], name
    assert not hasattr(Tallied, "__getattr__")
