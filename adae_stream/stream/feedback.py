"""Ground-truth feedback joined with the answers the service gave: live accuracy of each defense.

A feedback record carries the true labels of an earlier request, ``{"id": "<request id>", "labels":
[<int>, ...]}``, one label per instance in request order. Labels may come minutes or hours after the
answer, more than once, for unknown ids, or never, and to any replica of the group.

The join keeps, per answered request, the per-instance predictions (no_defense, defense, corrected),
flags and scores, for ``feedback.window_s``, with the detector and version that answered, and where a
shadow version scored the same instances, its predictions and flags too: labels then give live accuracy
per detector, version and role, so a candidate is judged on real labels before it is promoted.

Every replica holds the answers of the whole group (a global table in Kafka Streams' terms), read by
its JoinTail (join_tail.py) from the output topic, the answers' changelog, and from the shadow topic,
where each replica writes its shadows' predictions. So a label joins whichever replica it reaches, under
any keying, partition count, rebalance or restart; nothing is stored but in Kafka. Memory is bounded by
``feedback.max_instances`` (oldest answers go first) and exported. A label for a (request, instance)
counts once per replica while its answer is in the window.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adae_stream.codecs import decode_response
from adae_stream.codecs.records import MODEL_NAME_HEADER, MODEL_VERSION_HEADER, parse_json
from adae_stream.codecs.tensors import INSTANCE_INDEX
from adae_stream.errors import DecodeError, UnreadableAnswer
from adae_stream.scoring import IS_ADVERSARIAL
from adae_stream.stream.telemetry import PREDICTIONS, Metrics, Outcome, PairedEvidence, VersionOutcome

log = logging.getLogger(__name__)

MAX_LABELS = 1_000_000
WHO_ANSWERED = (MODEL_NAME_HEADER, MODEL_VERSION_HEADER)


@dataclass
class Scored:
    """One version's predictions and flags for a request's instances."""

    detector: str
    version: str
    role: str  # "serving" (the answer) | "shadow"
    no_defense: np.ndarray
    defense: np.ndarray
    corrected: np.ndarray
    is_adversarial: np.ndarray

    @classmethod
    def of(cls, detector: str, version: str, role: str, fields: dict[str, np.ndarray]) -> Scored:
        return cls(detector, version, role, *(np.asarray(fields[k]) for k in (*PREDICTIONS, IS_ADVERSARIAL)))

    def judged(self, new: np.ndarray, y: np.ndarray) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        """Correct predictions per defense, and (flag, undefended) counts, on the newly labelled instances."""
        correct = {p: int((getattr(self, p)[new] == y).sum()) for p in PREDICTIONS}
        undefended_wrong = self.no_defense[new] != y
        flagged = self.is_adversarial[new].astype(bool)
        confusion = {}
        for flag_name, flag_mask in (("flagged", flagged), ("unflagged", ~flagged)):
            for outcome_name, mask in (("wrong", undefended_wrong), ("correct", ~undefended_wrong)):
                confusion[(flag_name, outcome_name)] = int((flag_mask & mask).sum())
        return correct, confusion


@dataclass
class Answer:
    """What the service answered for one request, as the join needs it (and its shadow's scoring)."""

    timestamp_s: float
    serving: Scored
    shadow: Scored | None = None
    labelled: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.labelled = np.zeros(len(self.serving.corrected), dtype=bool)

    @property
    def n(self) -> int:
        return len(self.serving.corrected)


@dataclass
class _Pending:
    request_id: str
    labels: np.ndarray
    token: Any
    arrival_s: float


def paired(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> tuple[int, int, int]:
    """(only b right, only a right, both right or both wrong) over labelled instances."""
    a_right, b_right = a == y, b == y
    return int((b_right & ~a_right).sum()), int((a_right & ~b_right).sum()), int((a_right == b_right).sum())


def evidence(answer: Answer, new: np.ndarray, y: np.ndarray) -> list[PairedEvidence]:
    """The paired counts the decisions take, from what each option *would* publish: every answer holds
    both the corrected and the undefended prediction, whichever is published (README, "Decisions")."""
    serving = answer.serving
    if not serving.detector:  # an answer read back without its detector's name: no series to count under
        return []
    out = [
        PairedEvidence(
            "defense",
            serving.detector,
            serving.version,
            serving.version,
            *paired(serving.no_defense[new], serving.corrected[new], y),
        )
    ]
    if answer.shadow is not None:
        clean = ~serving.is_adversarial[new].astype(bool)
        out.append(
            PairedEvidence(
                "versions",
                serving.detector,
                serving.version,
                answer.shadow.version,
                *paired(serving.corrected[new], answer.shadow.corrected[new], y),
                a_clean=int(clean.sum()),
                b_flagged_clean=int((answer.shadow.is_adversarial[new].astype(bool) & clean).sum()),
            )
        )
    return out


def parse_feedback(value: bytes | None) -> tuple[str, np.ndarray]:
    """(request id, labels) of a feedback record, or DecodeError with a dead-letter reason."""
    if not value:
        raise DecodeError("decode", "empty feedback record")
    body = parse_json(value, "feedback")
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
        raise DecodeError("schema", 'feedback must be {"id": "<request id>", "labels": [<int>, ...]}')
    labels = body.get("labels")
    if not isinstance(labels, list) or len(labels) > MAX_LABELS:
        raise DecodeError("schema", "feedback 'labels' must be a list of integer class labels")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 for v in labels):
        raise DecodeError("dtype", "feedback 'labels' must be non-negative integers")
    return body["id"], np.asarray(labels, dtype=np.int64)


class FeedbackJoin:
    def __init__(
        self,
        window_s: float,
        max_instances: int,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        max_pending: int = 100_000,
    ) -> None:
        self.window_s = window_s
        self.max_instances = max_instances
        self.max_pending = max_pending
        self._pending: deque[_Pending] = deque()  # labels whose answer is not read yet, oldest first
        self.metrics = metrics
        self.clock = clock
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
        self._attach_early_shadow(request_id, answer)
        self._answers[request_id] = answer
        self._instances += answer.n
        self._gone.pop(request_id, None)
        self._evict()

    def _attach_early_shadow(self, request_id: str, answer: Answer) -> None:
        shadow = self._early_shadows.pop(request_id, None)
        if shadow is not None and len(shadow.corrected) == answer.n:
            answer.shadow = shadow

    def _unjoinable_id(self, request_id: str) -> None:
        self._unjoinable[request_id] = None
        self._bound(self._unjoinable)

    def _bound(self, ids: OrderedDict) -> None:
        """The id sets beside the answers (gone, unjoinable, early shadows) hold as many as the answers
        do, at least 1,000: oldest first out."""
        while len(ids) > max(1000, len(self._answers)):
            ids.popitem(last=False)

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

    def label(self, request_id: str, labels: np.ndarray) -> Outcome | None:
        """Join one feedback record, or None when its answer is not held (yet): the caller asks again once
        the tail has read further, and calls ``missing`` when it has read far enough (JoinTail.placed).
        Raises DecodeError (shape) when its label count is not the answer's."""
        self._evict()
        return self._join(request_id, labels)

    def _join(self, request_id: str, labels: np.ndarray) -> Outcome | None:
        """label() on a join just evicted."""
        answer = self._answers.get(request_id)
        if answer is None:
            if request_id not in self._unjoinable:
                return None
            outcome = Outcome("unplaced", reason="answer_without_predictions")
        elif len(labels) != answer.n:
            raise DecodeError(
                "shape", f"feedback for {request_id!r} has {len(labels)} labels, its answer {answer.n} instances"
            )
        else:
            new = ~answer.labelled
            answer.labelled[:] = True
            if not new.any():
                outcome = Outcome("duplicate")
            else:
                y = labels[new]
                correct, confusion = answer.serving.judged(new, y)
                versions = [
                    VersionOutcome(s.detector, s.version, s.role, int(new.sum()), *s.judged(new, y))
                    for s in (answer.serving, answer.shadow)
                    if s is not None and s.detector
                ]
                outcome = Outcome(
                    "joined", int(new.sum()), correct, confusion, versions, evidence=evidence(answer, new, y)
                )
        self._count(outcome)
        return outcome

    def submit(self, request_id: str, labels: np.ndarray, token: Any, arrival_s: float | None = None) -> Outcome | None:
        """Join a label now, or hold it (None) until its answer is read or the tail has read past its
        arrival (``settle``); ``token`` comes back with its outcome (the record, to settle its offset)."""
        outcome = self.label(request_id, labels)
        if outcome is not None:
            return outcome
        if len(self._pending) >= self.max_pending:
            return self.unplaced("pending_full")
        self._pending.append(_Pending(request_id, labels, token, self.clock() if arrival_s is None else arrival_s))
        return None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def drop_pending(self, belongs: Callable[[Any], bool]) -> int:
        """Forget the held labels whose token ``belongs`` (a partition revoked or lost: its new owner reads
        them again from the committed offset, and counts them there, once). Returns how many."""
        kept = deque(item for item in self._pending if not belongs(item.token))
        dropped = len(self._pending) - len(kept)
        self._pending = kept
        return dropped

    def settle(self, placed: Callable[[float], bool]) -> list[tuple[Any, Outcome | DecodeError]]:
        """The held labels that can be decided now: joined, or missing once ``placed(arrival_s)`` says every
        answer given before that arrival has been read. A label whose count turned out wrong for its answer
        comes back as its DecodeError (to be dead-lettered)."""
        if not self._pending:
            return []
        self._evict()  # once for the pass, not per held label
        decided: list[tuple[Any, Outcome | DecodeError]] = []
        waiting: deque[_Pending] = deque()
        for item in self._pending:
            outcome: Outcome | DecodeError | None
            try:
                outcome = self._join(item.request_id, item.labels)
                if outcome is None and placed(item.arrival_s):
                    outcome = self._missing(item.request_id)
            except DecodeError as exc:
                outcome = exc
            if outcome is None:
                waiting.append(item)
            else:
                decided.append((item.token, outcome))
        self._pending = waiting
        return decided

    def missing(self, request_id: str) -> Outcome:
        """A label whose answer no replica gave within the window (the tail has read past its arrival)."""
        self._evict()
        return self._missing(request_id)

    def _missing(self, request_id: str) -> Outcome:
        answer = self._answers.get(request_id)
        if answer is not None:  # cannot happen after label() said None and nothing was read since
            raise ValueError(f"the answer of {request_id!r} is held: join it with label()")
        outcome = Outcome("late" if request_id in self._gone else "unknown")
        self._count(outcome)
        return outcome

    def unplaced(self, reason: str) -> Outcome:
        """A label the join gave up on before its answer could be looked for (e.g. pending_full)."""
        outcome = Outcome("unplaced", reason=reason)
        self._count(outcome)
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
            self.metrics.set_feedback_state(len(self._answers), self._instances, len(self._pending))


def encode_shadow(request_id: str, detector: str, version: str, fields: dict[str, np.ndarray]) -> bytes:
    """A shadow topic record: a shadow version's predictions and flags for one request's instances."""
    body = {"id": request_id, "detector": detector, "version": version}
    body.update({k: np.asarray(fields[k]).astype(int).tolist() for k in (*PREDICTIONS, IS_ADVERSARIAL)})
    return json.dumps(body, separators=(",", ":")).encode()


def _decode_shadow(value: bytes) -> tuple[str, str, str, dict[str, np.ndarray]]:
    body = json.loads(value)
    fields = {k: np.asarray(body[k], np.int64) for k in PREDICTIONS}
    fields[IS_ADVERSARIAL] = np.asarray(body[IS_ADVERSARIAL], bool)
    return str(body["id"]), str(body["detector"]), str(body["version"]), fields


def read_record(join: FeedbackJoin, rec: Any, shadow_topic: str | None) -> bool:
    """One record of the output topic (an answer) or of the shadow topic into the join. Returns whether it
    was taken; records that are not answers or shadow records we can read are skipped (the topics may
    hold other writers' records), and so are flagged-only answers (kafka.publish flagged).

    Each answer is decoded as it is read (26-150 µs, benchmarks/RESULTS.md, "Feedback join across
    replicas"). Keeping the records undecoded until a label asks was measured too: 6-48x less time per
    answer, but 3-4x the memory per answer, so feedback.max_instances would hold a far shorter window."""
    if shadow_topic is not None and rec.topic == shadow_topic:
        try:
            request_id, detector, version, fields = _decode_shadow(rec.value)
        except (ValueError, KeyError, TypeError):
            return False
        join.remember_shadow(request_id, detector, version, fields)
        return True
    try:
        answer = decode_response(rec.value, rec.headers)
    except UnreadableAnswer:
        return False
    if INSTANCE_INDEX in answer:
        return False
    headers = dict(rec.headers or ())
    name, version = ((headers.get(h) or b"").decode("utf-8", "replace") for h in WHO_ANSWERED)
    join.remember(answer["id"], answer, rec.timestamp / 1000.0, name, version)
    return True
