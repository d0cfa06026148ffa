"""Ground-truth feedback joined with the answers the service gave: live accuracy of each defense.

A feedback record carries the true labels of an earlier request, ``{"id": "<request id>", "labels":
[<int>, ...]}``, one label per instance in request order. Labels may come minutes or hours after the
answer, more than once, for unknown ids, or never.

The join keeps, per answered request, the per-instance predictions (no_defense, defense, corrected),
flags and scores, for ``feedback.window_s``, with the detector and version that answered, and where a
shadow version scored the same instances, its predictions and flags too: labels then give live accuracy
per detector, version and role, so a candidate is judged on real labels before it is promoted.
Nothing else stores them: the output topic already is the changelog, so after a restart the state is
rebuilt by reading it from the offsets at now minus the window (without the shadow's scoring, which
no topic holds). Memory is bounded by ``feedback.max_instances`` (oldest answers go first) and exported.
A label for a (request, instance) counts once while its answer is in the window.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adae_stream.config import Config
from adae_stream.errors import DecodeError, UnreadableAnswer
from adae_stream.scoring import CORRECTED, IS_ADVERSARIAL
from adae_stream.stream.clients import read_since
from adae_stream.stream.codecs import decode_response
from adae_stream.stream.codecs.records import MODEL_NAME_HEADER, MODEL_VERSION_HEADER, parse_json
from adae_stream.stream.codecs.tensors import INSTANCE_INDEX
from adae_stream.stream.telemetry import PREDICTIONS, Metrics, Outcome, VersionOutcome

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
    ) -> None:
        self.window_s = window_s
        self.max_instances = max_instances
        self.metrics = metrics
        self.clock = clock
        self._answers: OrderedDict[str, Answer] = OrderedDict()  # by id, oldest first
        self._instances = 0
        # ids that left the window (or were evicted for memory), so a label for them counts as late, not
        # unknown; bounded like the answers themselves
        self._gone: OrderedDict[str, None] = OrderedDict()

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
        """Keep an answer (live, or read back from the output topic at start-up) and who gave it."""
        if not all(k in fields for k in (*PREDICTIONS, IS_ADVERSARIAL)):
            return  # an answer without all predictions (return_all_predictions off) cannot be joined
        ts = self.clock() if timestamp_s is None else timestamp_s
        old = self._answers.pop(request_id, None)
        if old is not None:
            self._instances -= old.n
        answer = Answer(ts, Scored.of(detector, version, "serving", fields))
        self._answers[request_id] = answer
        self._instances += answer.n
        self._gone.pop(request_id, None)
        self._evict()

    def forget(self, request_id: str) -> None:
        """An answer remembered that did not go out after all (its record was dead-lettered instead)."""
        old = self._answers.pop(request_id, None)
        if old is not None:
            self._instances -= old.n

    def remember_shadow(self, request_id: str, version: str, fields: dict[str, np.ndarray]) -> None:
        """The shadow version's scoring of an answer already remembered (it runs after the answer is sent);
        the shadow of an answer not held (evicted, or without all predictions) is not kept."""
        answer = self._answers.get(request_id)
        if answer is not None and len(fields[CORRECTED]) == answer.n:
            answer.shadow = Scored.of(answer.serving.detector, version, "shadow", fields)

    def label(self, request_id: str, labels: np.ndarray) -> Outcome:
        """Join one feedback record; raises DecodeError (shape) when its label count is not the answer's."""
        self._evict()
        answer = self._answers.get(request_id)
        if answer is None:
            outcome = Outcome("late" if request_id in self._gone else "unknown")
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
                outcome = Outcome("joined", int(new.sum()), correct, confusion, versions)
        if self.metrics is not None:
            self.metrics.feedback_outcome(outcome)
        return outcome

    def _evict(self) -> None:
        horizon = self.clock() - self.window_s
        while self._answers:
            request_id, answer = next(iter(self._answers.items()))
            if answer.timestamp_s >= horizon and self._instances <= self.max_instances:
                break
            self._answers.popitem(last=False)
            self._instances -= answer.n
            self._gone[request_id] = None
        while len(self._gone) > max(1000, len(self._answers)):
            self._gone.popitem(last=False)
        if self.metrics is not None:
            self.metrics.set_feedback_state(len(self._answers), self._instances)


def rebuild_from_changelog(join: FeedbackJoin, cfg: Config, bootstrap: str) -> int:
    """After a restart, the answers still waiting for labels are read back from the output topic (the
    changelog), from now minus feedback.window_s: no database, no state of our own on disk."""
    t0 = time.monotonic()
    topic = cfg.kafka.output_topic
    since_ms = int((join.clock() - join.window_s) * 1000)
    records = read_since(cfg, bootstrap, topic, since_ms, timeout_s=max(30.0, cfg.kafka.connect_timeout_s))
    kept = rebuild(join, records)
    log.info(
        "feedback join rebuilt from %s: %d answers (%d instances) of the last %.0f s, in %.1f s",
        topic,
        kept,
        join.instances,
        join.window_s,
        time.monotonic() - t0,
    )
    return kept


def rebuild(join: FeedbackJoin, records: list[Any]) -> int:
    """Fill the join from output-topic records (oldest first by timestamp). Returns the answers kept.
    Records that are not answers we can read are skipped (the topic may hold other writers' records)."""
    kept = 0
    for rec in sorted(records, key=lambda r: r.timestamp):
        try:
            answer = decode_response(rec.value, rec.headers)
        except UnreadableAnswer:
            continue
        if INSTANCE_INDEX not in answer:
            headers = dict(rec.headers or ())
            name, version = ((headers.get(h) or b"").decode("utf-8", "replace") for h in WHO_ANSWERED)
            join.remember(answer["id"], answer, rec.timestamp / 1000.0, name, version)
            kept += 1
    return kept
