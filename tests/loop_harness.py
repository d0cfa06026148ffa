"""The real Pipeline on stand-in clients (tests/stand_ins.py), driven by its own loop step, with a scorer
whose answers follow a formula the tests recompute on their own: the fast tests of the record path and of
the evidence through faults (tests/fast/test_record_path.py, tests/fast/test_evidence_faults.py)."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Mapping

import numpy as np

from adae_stream.clients import TopicPartition
from adae_stream.codecs import decode_response, encode_request
from adae_stream.config import load_config
from adae_stream.feedback.join import FeedbackJoin
from adae_stream.scoring import ScorerInfo, ServingDetector, as_source
from adae_stream.stream.app import Pipeline
from adae_stream.stream.offsets import OffsetTracker
from adae_stream.stream.record_path import RecordPath
from adae_stream.stream.sink import Sink
from tests.stand_ins import MemoryBroker, MemoryClients, RecordingMetrics, StandInProducer

THRESHOLD = 0.5
N_CLASSES = 3


class StubScorer:
    """x is (n, 2): S(x) = x[:, 0], flagged above THRESHOLD; M(x) says class int(x[:, 1]) % 3, M(AE(x)) the
    next class. ``raises`` makes every call fail; ``fail_on`` fails the batches that hold such a score;
    ``delay_s`` makes it slow."""

    def __init__(self, detector_id: str = "d1", raises: bool = False, fail_on: float | None = None, delay_s=0.0):
        self.info = ScorerInfo((2,), THRESHOLD, N_CLASSES, "test", detector_id, "c1")
        self.raises, self.fail_on, self.delay_s = raises, fail_on, delay_s
        self.batches: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.batches.append(x.copy())
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.raises or (self.fail_on is not None and np.any(x[:, 0] == self.fail_on)):
            raise RuntimeError("the scorer broke")
        return expected(x)

    def warmup(self, up_to=None) -> None:
        pass


def expected(x: np.ndarray) -> dict[str, np.ndarray]:
    """What StubScorer answers, from its formula."""
    score = x[:, 0].astype(np.float32)
    flag = score > THRESHOLD
    no_defense = x[:, 1].astype(np.int64) % N_CLASSES
    defense = (no_defense + 1) % N_CLASSES
    return {
        "instance_score": score,
        "is_adversarial": flag,
        "corrected": np.where(flag, defense, no_defense),
        "no_defense": no_defense,
        "defense": defense,
    }


def instances(scores: list[float], first_class: int = 0) -> np.ndarray:
    return np.array([[s, (first_class + i) % N_CLASSES] for i, s in enumerate(scores)], np.float32)


class Source:
    """A repository as the loop sees it: detectors now, and a change handed over once."""

    def __init__(self, detectors: Mapping[str, ServingDetector]) -> None:
        self._current, self._next = dict(detectors), None

    def current(self) -> Mapping[str, ServingDetector]:
        return self._current

    def changed(self) -> Mapping[str, ServingDetector] | None:
        new, self._next = self._next, None
        if new is not None:
            self._current = new
        return new

    def swap(self, detectors: Mapping[str, ServingDetector]) -> None:
        self._next = dict(detectors)


class Harness:
    """The real Pipeline on stand-in clients (tests/stand_ins.py: an in-memory log behind the client seam),
    driven by its own loop step. Records go in through the log, as a client's would; what the service
    writes is read back from it, as a reader would."""

    def __init__(self, detectors=None, **sections) -> None:
        kafka = {
            "bootstrap_servers": "memory:0",
            "input_topic": "in",
            "output_topic": "out",
            "dead_letter_topic": "dead-letter",
            **sections.pop("kafka", {}),
        }
        # no clock skew to wait for: the stand-in log has one clock
        feedback = {"clock_skew_s": 0.0, **sections.pop("feedback", {})}
        overrides = {"kafka": kafka, "feedback": feedback, "metrics": {"enabled": False}, **sections}
        self.cfg = load_config(None, environ={}, overrides=overrides)
        self.broker, self.metrics = MemoryBroker(), RecordingMetrics()
        self.clients = MemoryClients(self.broker, self.cfg)
        source = as_source(detectors if detectors is not None else StubScorer(), self.cfg.detector.model_name)
        self.pipeline = Pipeline(self.cfg, source, self.metrics, "memory:0", clients=self.clients)
        # What Pipeline.run() does before its loop: without it, each housekeeping pass's full collection walks
        # this process's whole heap (TensorFlow and the other tests' models): 0.1-0.2 s, three times a test,
        # 23 s of test_record_path.py's 45 tests after test_detector.py, against 1 s frozen
        gc.freeze()
        assert self.pipeline.connect()
        self.pipeline.turn()  # the group assigns every partition; the loop positions them

    @property
    def path(self) -> RecordPath:
        return self.pipeline.path

    @property
    def sink(self) -> Sink:
        return self.pipeline.sink

    @property
    def tracker(self) -> OffsetTracker:
        return self.pipeline.tracker

    @property
    def join(self) -> FeedbackJoin | None:
        return self.pipeline.labels.join if self.pipeline.labels is not None else None

    @property
    def producer(self) -> StandInProducer:
        return self.clients.producers[-1]

    def send(self, value: bytes, headers=(), key: bytes | None = None, topic: str = "in") -> int:
        return self.broker.produce(topic, value, key, list(headers)).offset

    def request(self, x: np.ndarray, rid: str, fmt: str = "v2", headers=()) -> int:
        payload, h = encode_request(x, fmt, rid)
        return self.send(payload, [*h, *headers])

    def label(self, request_id: str, labels: list[int]) -> None:
        self.send(json.dumps({"id": request_id, "labels": labels}).encode(), topic=self.cfg.kafka.feedback_topic)

    def turn(self, force: bool = True) -> None:
        """The loop's step; ``force``: then what is pending is scored and flushed and the offsets committed
        (what a commit interval, a revocation or a stop does), and one more step reads back what went out."""
        self.pipeline.turn()
        if force:
            self.pipeline.finish_in_flight()
            self.pipeline.committer.commit(force=True)
            self.pipeline.turn()
            self.pipeline.committer.commit(force=True)

    def turns_until(self, done, turns: int = 6) -> int:
        """Forced turns until ``done()`` (a redo takes a few: positioned, read again, scored); how many."""
        for n in range(1, turns + 1):
            self.turn()
            if done():
                return n
        raise AssertionError(f"not done after {turns} turns")

    def to(self, topic: str) -> list[dict]:
        """What a reader of ``topic`` sees (read_committed), as dicts."""
        return [vars(r) for r in self.broker.records(topic)]

    def topics(self) -> list[str]:
        """The topics the service wrote to, one entry per record a reader sees."""
        inputs = {"in", self.cfg.kafka.feedback_topic}
        return sorted(
            r.topic
            for tp in list(self.broker.logs)
            if tp.topic not in inputs
            for r in self.broker.records(tp.topic)
            if r.partition == tp.partition
        )

    def answers(self) -> list[dict]:
        return [decode_response(r["value"], r["headers"]) | {"headers": dict(r["headers"])} for r in self.to("out")]

    def dead_letters(self) -> list[str]:
        return [dict(r["headers"])["error-reason"].decode() for r in self.to("dead-letter")]

    def statuses(self) -> list[tuple]:
        return [call[:2] for call in self.metrics.calls["request_done"]]

    def outcomes(self) -> list[str]:
        """The feedback outcomes counted so far (only ever at a commit: feedback/journal.py)."""
        return [c[0].result for c in self.metrics.calls["feedback_outcome"]]

    def all_settled(self, topic: str = "in") -> bool:
        """Every record fed so far has its outcome: its offset is committable."""
        tp = TopicPartition(topic, 0)
        point = self.tracker.commit_point(tp)
        if point is None:  # nothing read since it was (re)positioned: where the group's commit stands
            point = self.broker.committed.get((self.cfg.kafka.group_id, tp), 0)
        return point == self.broker.end(topic)
