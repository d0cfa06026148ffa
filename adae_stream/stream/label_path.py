"""The label path: a feedback record into the join, and its decision out: the label's evidence on the
ledger (its offset done once the broker has it), or its dead letter, or nothing to write (its offset done at
once). Decisions come in offset order per partition and take effect with the commit that covers them
(feedback/join.py, feedback/journal.py); this object writes what they say, in that order.
"""

from __future__ import annotations

from collections.abc import Callable

from adae_stream.codecs import RawRecord
from adae_stream.config import KafkaConfig
from adae_stream.errors import DecodeError
from adae_stream.feedback.join import Decided, FeedbackJoin, LabelRecord
from adae_stream.feedback.labels import parse_feedback
from adae_stream.feedback.ledger import encode_evidence
from adae_stream.feedback.outcome import Outcome
from adae_stream.stream.sink import Sink


class LabelPath:
    def __init__(self, kafka: KafkaConfig, join: FeedbackJoin, sink: Callable[[], Sink]) -> None:
        self.kafka = kafka
        self.join = join
        self._sink = sink

    @property
    def sink(self) -> Sink:
        return self._sink()

    def ingest(self, raw: RawRecord) -> None:
        """A feedback record: submitted in its turn, malformed ones too (dead-lettered when their turn
        comes)."""
        label = LabelRecord(raw.topic, raw.partition, raw.offset, raw, self.join.clock())
        try:
            label.request_id, label.labels = parse_feedback(raw.value)
        except DecodeError as exc:
            label.error = exc
        self._write(self.join.submit(label))

    def settle(self, placed: Callable[[float], bool]) -> None:
        """The held labels the join can decide now (JoinTail.placed says how far it has read)."""
        self._write(self.join.settle(placed))

    def forget_partition(self, topic: str, partition: int) -> None:
        """A partition no longer ours, or redone from its committed offset: its held labels are dropped and
        its labels' uncommitted decisions undone; its new owner (or our redo) reads them again."""
        self.join.forget_partition(topic, partition)

    def _write(self, decided: list[Decided]) -> None:
        for raw, outcome in decided:
            if isinstance(outcome, DecodeError):
                self.sink.dead_letter(raw, outcome.reason, f"feedback: {outcome.message}")
            else:
                self._done(raw, outcome)

    def _done(self, raw: RawRecord, outcome: Outcome) -> None:
        """A decided label: its paired evidence goes to the ledger, and its offset is done once the broker
        has that record (or at once when it adds no evidence)."""
        topic = self.kafka.evidence_topic
        if topic is None or not outcome.evidence:
            self.sink.settle(raw, "feedback")
            return
        key = outcome.evidence[0].detector.encode("utf-8", "replace")
        self.sink.evidence(topic, raw, encode_evidence(outcome.evidence, outcome.request_id), key)
