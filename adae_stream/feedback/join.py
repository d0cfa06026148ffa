"""Ground-truth feedback joined with the answers the service gave: live accuracy of each defense, and the
paired evidence the decisions take.

The join keeps, per answered request, the per-instance predictions (no_defense, defense, corrected), flags
and scores, for ``feedback.window_s``, with the detector and version that answered, and where a shadow
version scored the same instances, its predictions and flags too: labels then give live accuracy per
detector, version and role, so a candidate is judged on real labels before it is promoted.

Every replica holds the answers of the whole group (a global table in Kafka Streams' terms), read by its
JoinTail (join_tail.py) from the output topic, the answers' changelog, and from the shadow topic, where
each replica writes its shadows' predictions. So a label joins whichever replica it reaches, under any
keying, partition count, rebalance or restart; nothing is stored but in Kafka. Memory is bounded by
``feedback.max_instances`` (oldest answers go first) and exported.

Labels of one partition are decided in offset order: a label whose answer is not read yet holds the labels
behind it. So whatever a decided label writes (its evidence, or its dead letter) is below the offset the
next commit takes, and a label redone from a committed offset never writes twice. A decision takes effect
with the commit that covers its record and is undone when its record is read again (journal.py). A label
for a (request, instance) counts once per replica while its answer is in the window.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from adae_stream.errors import DecodeError
from adae_stream.feedback.answers import Answer, Scored, evidence
from adae_stream.feedback.journal import LabelJournal, Partition
from adae_stream.feedback.outcome import PREDICTIONS, Outcome, VersionOutcome
from adae_stream.scoring import IS_ADVERSARIAL


class JoinMetrics(Protocol):
    """What the join reports (the pipeline's Metrics has both)."""

    def feedback_outcome(self, outcome: Outcome) -> None: ...
    def set_feedback_state(self, answers: int, instances: int, pending: int) -> None: ...


@dataclass
class LabelRecord:
    """A feedback record as the join takes it: where it was read, what it says (parse_feedback) or why it
    cannot be read (``error``, decided in its turn like any other), and ``token``, handed back with its
    decision (the record, whose offset the caller settles)."""

    topic: str
    partition: int
    offset: int
    token: Any
    arrival_s: float
    request_id: str = ""
    labels: np.ndarray | None = None
    error: DecodeError | None = None

    @property
    def where(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


Decided = tuple[Any, Outcome | DecodeError]  # a label's token and its outcome, or the error to dead-letter


class FeedbackJoin:
    def __init__(
        self,
        window_s: float,
        max_instances: int,
        metrics: JoinMetrics | None = None,
        clock: Callable[[], float] = time.time,
        max_pending: int = 100_000,
    ) -> None:
        self.window_s = window_s
        self.max_instances = max_instances
        self.max_pending = max_pending
        self.metrics = metrics
        self.clock = clock
        self.journal = LabelJournal(self._count)
        # labels not decided yet, per label partition, oldest first
        self._pending: dict[Partition, deque[LabelRecord]] = {}
        self._held = 0
        self._answers: OrderedDict[str, Answer] = OrderedDict()  # by id, oldest first
        self._instances = 0
        # ids that left the window (or were evicted for memory), so a label for them counts as late, not
        # unknown; bounded like the answers themselves, as are the next two
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._unjoinable: OrderedDict[str, None] = OrderedDict()  # answers without all predictions
        self._early_shadows: OrderedDict[str, Scored] = OrderedDict()  # read before their answer

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def instances(self) -> int:
        return self._instances

    @property
    def pending(self) -> int:
        return self._held

    # ------------------------------------------------------------------ answers (from the tail)
    def remember(
        self,
        request_id: str,
        fields: dict[str, np.ndarray],
        timestamp_s: float | None = None,
        detector: str = "",
        version: str = "",
    ) -> None:
        """Keep an answer (read from the output topic) and who gave it. The same answer again (a redelivery
        answered twice under at-least-once) keeps what was already labelled and its shadow."""
        if not all(k in fields for k in (*PREDICTIONS, IS_ADVERSARIAL)):
            self._unjoinable_id(request_id)  # an answer without all predictions (return_all_predictions off)
            return
        ts = self.clock() if timestamp_s is None else timestamp_s
        answer = Answer(ts, Scored.of(detector, version, "serving", fields))
        old = self._answers.pop(request_id, None)
        if old is not None:
            self._instances -= old.n
            if old.n == answer.n:
                answer.labelled, answer.shadow = old.labelled, old.shadow
        shadow = self._early_shadows.pop(request_id, None)
        if shadow is not None and len(shadow.corrected) == answer.n:
            answer.shadow = shadow
        self._answers[request_id] = answer
        self._instances += answer.n
        self._gone.pop(request_id, None)
        self._evict()

    def remember_shadow(self, request_id: str, detector: str, version: str, fields: dict[str, np.ndarray]) -> None:
        """A shadow version's scoring of a request's instances (from the shadow topic). It may be read before
        the answer it belongs to (another partition, another replica's producer): then it waits for it."""
        shadow = Scored.of(detector, version, "shadow", fields)
        answer = self._answers.get(request_id)
        if answer is None:  # not read yet: attached when it is
            self._early_shadows[request_id] = shadow
            self._bound(self._early_shadows)
        elif len(shadow.corrected) == answer.n:
            answer.shadow = shadow

    def _unjoinable_id(self, request_id: str) -> None:
        self._unjoinable[request_id] = None
        self._bound(self._unjoinable)

    def _bound(self, ids: OrderedDict) -> None:
        """The id sets beside the answers (gone, unjoinable, early shadows) hold as many as the answers
        do, at least 1,000: oldest first out."""
        while len(ids) > max(1000, len(self._answers)):
            ids.popitem(last=False)

    # ------------------------------------------------------------------ labels (from the loop)
    def submit(self, label: LabelRecord) -> list[Decided]:
        """Take a label record; returns the labels of its partition decided now (it, when nothing is held
        before it and its answer is held, or it is not feedback). The others wait for ``settle``."""
        self._evict()
        if self._held >= self.max_pending and label.error is None:
            outcome = Outcome("unplaced", reason="pending_full")  # writes nothing: may jump the queue
            self.journal.record(label.where, outcome)
            return [(label.token, outcome)]
        queue = self._pending.setdefault((label.topic, label.partition), deque())
        queue.append(label)
        self._held += 1
        return self._decide_queue(queue, placed=None)

    def settle(self, placed: Callable[[float], bool]) -> list[Decided]:
        """The held labels that can be decided now, in order per partition: joined, or missing once
        ``placed(arrival_s)`` says every answer given before that arrival has been read."""
        if not self._held:
            return []
        self._evict()  # once for the pass, not per held label
        decided: list[Decided] = []
        for queue in self._pending.values():
            decided += self._decide_queue(queue, placed)
        return decided

    def forget_partition(self, topic: str, partition: int) -> int:
        """The partition's labels are read again from its committed offset (here after a redo, or by its
        next owner): its held labels are dropped and its uncommitted decisions undone. Returns how many."""
        dropped = self._pending.pop((topic, partition), deque())
        self._held -= len(dropped)
        return len(dropped) + self.journal.roll_back(topic, partition)

    def _decide_queue(self, queue: deque[LabelRecord], placed: Callable[[float], bool] | None) -> list[Decided]:
        decided: list[Decided] = []
        while queue:
            label = queue[0]
            result = self._decide(label, placed)
            if result is None:
                break
            queue.popleft()
            self._held -= 1
            decided.append((label.token, result))
        return decided

    def _decide(self, label: LabelRecord, placed: Callable[[float], bool] | None) -> Outcome | DecodeError | None:
        """A label's outcome (recorded in the journal), its error, or None while it must wait."""
        if label.error is not None:
            self.journal.record(label.where, Outcome("dead_letter"))
            return label.error
        assert label.labels is not None
        answer = self._answers.get(label.request_id)
        if answer is None:
            if label.request_id in self._unjoinable:
                outcome = Outcome("unplaced", reason="answer_without_predictions")
            elif placed is not None and placed(label.arrival_s):
                outcome = Outcome("late" if label.request_id in self._gone else "unknown")
            else:
                return None
            self.journal.record(label.where, outcome)
            return outcome
        if len(label.labels) != answer.n:
            self.journal.record(label.where, Outcome("dead_letter"))
            return DecodeError(
                "shape",
                f"feedback for {label.request_id!r} has {len(label.labels)} labels, its answer {answer.n} instances",
            )
        new = ~answer.labelled
        if not new.any():
            outcome = Outcome("duplicate")
            self.journal.record(label.where, outcome)
            return outcome
        answer.labelled[new] = True
        y = label.labels[new]
        correct, confusion = answer.serving.judged(new, y)
        versions = [
            VersionOutcome(s.detector, s.version, s.role, int(new.sum()), *s.judged(new, y))
            for s in (answer.serving, answer.shadow)
            if s is not None and s.detector
        ]
        paired = evidence(answer, new, y)
        outcome = Outcome("joined", int(new.sum()), correct, confusion, versions, None, paired, label.request_id)
        self.journal.record(label.where, outcome, answer.labelled, new)
        return outcome

    def _count(self, outcome: Outcome) -> None:
        if self.metrics is not None:
            self.metrics.feedback_outcome(outcome)

    def _evict(self) -> None:
        horizon = self.clock() - self.window_s
        while self._answers:
            request_id, answer = next(iter(self._answers.items()))
            if answer.timestamp_s >= horizon and self._instances <= self.max_instances:
                break
            self._answers.popitem(last=False)
            self._instances -= answer.n
            self._gone[request_id] = None
        self._bound(self._gone)
        if self.metrics is not None:
            self.metrics.set_feedback_state(len(self._answers), self._instances, self._held)
