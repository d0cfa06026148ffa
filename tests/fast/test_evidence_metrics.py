"""The paired evidence as Prometheus counters: what the decisions read, summed over replicas."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from adae_stream.feedback.evidence import Counts, PairedEvidence
from adae_stream.feedback.outcome import Outcome
from adae_stream.monitoring.evidence_metrics import MAX_COMPARISONS_PER_DETECTOR
from adae_stream.monitoring.metrics import PipelineMetrics


def test_each_labelled_instance_lands_in_one_pair_series():
    registry = CollectorRegistry()
    metrics = PipelineMetrics(0.5, registry=registry)
    evidence = [
        PairedEvidence("defense", "a", "3", "3", Counts(2, 5, 9)),
        PairedEvidence("versions", "a", "3", "4", Counts(1, 0, 15)),
    ]
    metrics.feedback_outcome(Outcome("joined", 16, evidence=evidence))
    metrics.feedback_outcome(Outcome("joined", 16, evidence=evidence))
    get = registry.get_sample_value
    defense = {
        p: get("adae_evidence_defense_instances_total", {"detector": "a", "version": "3", "pair": p})
        for p in ("corrected_only", "undefended_only", "concordant")
    }
    assert defense == {"corrected_only": 4, "undefended_only": 10, "concordant": 18}
    versions = {
        p: get("adae_evidence_version_instances_total", {"detector": "a", "serving": "3", "shadow": "4", "pair": p})
        for p in ("shadow_only", "serving_only", "concordant")
    }
    assert versions == {"shadow_only": 2, "serving_only": 0, "concordant": 30}


def test_series_per_detector_are_bounded_oldest_first():
    registry = CollectorRegistry()
    metrics = PipelineMetrics(0.5, registry=registry)
    for v in range(MAX_COMPARISONS_PER_DETECTOR + 2):
        metrics.feedback_outcome(
            Outcome("joined", 1, evidence=[PairedEvidence("defense", "a", str(v), str(v), Counts(1, 0, 0))])
        )
    labels = {"detector": "a", "pair": "corrected_only"}
    assert registry.get_sample_value("adae_evidence_defense_instances_total", {**labels, "version": "0"}) is None
    assert registry.get_sample_value("adae_evidence_defense_instances_total", {**labels, "version": "9"}) == 1
