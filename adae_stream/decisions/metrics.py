"""The decision-maker's own series (``adae-stream decide``, its own /metrics): what it decided, on what
evidence, and whether evidence still arrives. One process per repository, so nothing here is summed."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from adae_stream.decisions.rules import Verdict


class DecisionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.decisions = Counter(
            "adae_decisions",
            "Decisions taken and written into policy.yaml (publish_corrected, publish_no_defense, promote, "
            "rollback, probation_passed, manual: a person's edit accepted).",
            ["detector", "decision"],
            registry=registry,
        )
        self.e_value = Gauge(
            "adae_decision_e_value",
            "The current e-value of each test and direction: promotion and rollback decide at 1/alpha, the defense "
            "at 2/alpha in either direction (alpha: adae_decision_alpha).",
            ["detector", "test", "direction"],
            registry=registry,
        )
        self.discordant = Gauge(
            "adae_decision_discordant_pairs",
            "Labelled instances where the test's two options differ, since its last change.",
            ["detector", "test"],
            registry=registry,
        )
        self.alpha = Gauge(
            "adae_decision_alpha", "Each test's share of decisions.alpha (alpha / 2K).", registry=registry
        )
        self.ledger_records = Counter(
            "adae_ledger_records", "Evidence records read from the ledger (one per label).", registry=registry
        )
        self.ledger_skipped = Counter(
            "adae_ledger_skipped_records", "Ledger records that were not evidence (logged).", registry=registry
        )
        self.check_failures = Counter(
            "adae_decision_check_failures",
            "Checks that failed (logged with their cause), by exception type; the next check tries again.",
            ["error"],
            registry=registry,
        )
        self.last_check = Gauge(
            "adae_decision_last_check_timestamp_seconds", "When the tests were last checked.", registry=registry
        )

    def verdict(self, detector: str, test: str, verdict: Verdict) -> None:
        self.alpha.set(verdict.alpha)
        self.discordant.labels(detector, test).set(verdict.pairs.discordant)
        for direction, e in verdict.e_values.items():
            self.e_value.labels(detector, test, direction).set(e)
