"""The feedback loop's series (live accuracy of each defense and the flag's precision / recall, from
labels; the join's memory) and the flagged captures' outcomes. Per detector, version and role, the same
figures are in detector_metrics.py."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from adae_stream.feedback.outcome import FEEDBACK_RESULTS, PREDICTIONS, UNPLACED_REASONS, Outcome


class FeedbackMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.feedback_records = Counter(
            "adae_feedback_records", "Feedback records, by what became of them.", ["result"], registry=registry
        )
        self.feedback_instances = Counter(
            "adae_feedback_instances", "Labelled instances joined with their answers.", registry=registry
        )
        self.feedback_correct = Counter(
            "adae_feedback_correct",
            "Joined instances whose prediction equals the label.",
            ["prediction"],
            registry=registry,
        )
        self.feedback_flag = Counter(
            "adae_feedback_flag_instances",
            "Joined instances by flag and by whether the undefended prediction was right.",
            ["flag", "undefended"],
            registry=registry,
        )
        self.feedback_join_answers = Gauge(
            "adae_feedback_join_answers", "Answers held for joining with feedback.", registry=registry
        )
        self.feedback_join_instances = Gauge(
            "adae_feedback_join_instances", "Instances held for joining (memory bound).", registry=registry
        )
        self.feedback_last = Gauge(
            "adae_feedback_last_joined_timestamp_seconds", "When a label last joined an answer.", registry=registry
        )
        self.feedback_unplaced = Counter(
            "adae_feedback_unplaced",
            "Labels not placed although their answer may exist, by reason.",
            ["reason"],
            registry=registry,
        )
        self.feedback_pending = Gauge(
            "adae_feedback_pending_labels",
            "Labels waiting for the join to read their answer (or to have read far enough to call it unknown).",
            registry=registry,
        )
        self.flagged_captured = Counter(
            "adae_flagged_captured",
            "Requests with flagged instances, by capture outcome.",
            ["result"],
            registry=registry,
        )
        for result in FEEDBACK_RESULTS:
            self.feedback_records.labels(result)
        for reason in UNPLACED_REASONS:
            self.feedback_unplaced.labels(reason)
        for prediction in PREDICTIONS:
            self.feedback_correct.labels(prediction)
        for flag in ("flagged", "unflagged"):
            for undefended in ("wrong", "correct"):
                self.feedback_flag.labels(flag, undefended)
        self.shadow_records = Counter(
            "adae_shadow_records",
            "Shadow predictions written for the feedback join of every replica, by outcome.",
            ["result"],
            registry=registry,
        )
        for result in ("sent", "sampled_out", "rejected"):
            self.flagged_captured.labels(result)
        for result in ("sent", "rejected"):
            self.shadow_records.labels(result)

    def outcome(self, outcome: Outcome) -> None:
        self.feedback_records.labels(outcome.result).inc()
        if outcome.reason is not None:
            self.feedback_unplaced.labels(outcome.reason).inc()
        if not outcome.instances:
            return
        self.feedback_instances.inc(outcome.instances)
        for prediction, n in outcome.correct.items():
            self.feedback_correct.labels(prediction).inc(n)
        for (flag, undefended), n in outcome.confusion.items():
            self.feedback_flag.labels(flag, undefended).inc(n)
        self.feedback_last.set_to_current_time()

    def state(self, answers: int, instances: int, pending: int) -> None:
        self.feedback_join_answers.set(answers)
        self.feedback_join_instances.set(instances)
        self.feedback_pending.set(pending)
