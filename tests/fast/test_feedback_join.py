"""The feedback join without Kafka: counts, duplicates, late and unknown labels, bounds, rebuild, the order
of decisions per partition, and decisions scoped to the commit that covers their label records."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from adae_stream.codecs import RawRecord, decode, encode, encode_request
from adae_stream.errors import DecodeError
from adae_stream.feedback.answers import encode_shadow
from adae_stream.feedback.join import FeedbackJoin, LabelRecord
from adae_stream.feedback.join_tail import read_record
from adae_stream.feedback.labels import parse_feedback
from tests.answer_info import ANSWER_INFO


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def answer(no_defense, defense, corrected, flags):
    return {
        "prediction": np.array(corrected),
        "no_defense": np.array(no_defense),
        "defense": np.array(defense),
        "corrected": np.array(corrected),
        "is_adversarial": np.array(flags, bool),
        "instance_score": np.zeros(len(flags), np.float32),
    }


class Feed:
    """Label records of one partition into a join, at consecutive offsets, as the record path submits them."""

    def __init__(self, join: FeedbackJoin, partition: int = 0, first_offset: int = 0) -> None:
        self.join, self.partition, self.offset = join, partition, first_offset

    def label(self, request_id: str, labels):
        """The label's decision if it is decided now (an Outcome, or the DecodeError to dead-letter), else None."""
        token = f"{self.partition}@{self.offset}"
        record = LabelRecord("labels", self.partition, self.offset, token, self.join.clock(), request_id)
        record.labels = np.asarray(labels)
        self.offset += 1
        decided = dict(self.join.submit(record))
        return decided.get(token)

    def settle(self, placed=lambda arrival: True) -> list:
        """What the held labels become once the tail has read past them."""
        return [outcome for _, outcome in self.join.settle(placed)]


class Counted:
    """The join's metrics: the outcomes it reports (only ever for committed label records)."""

    def __init__(self) -> None:
        self.outcomes: list = []

    def feedback_outcome(self, outcome) -> None:
        self.outcomes.append(outcome)

    def set_feedback_state(self, answers, instances, pending) -> None:
        pass

    @property
    def results(self) -> list[str]:
        return [o.result for o in self.outcomes]


def record(topic, value, headers=(), timestamp=1_000_000):
    return SimpleNamespace(topic=topic, value=value, headers=list(headers), timestamp=timestamp)


def test_joined_counts_each_prediction_and_the_flag_confusion():
    join = FeedbackJoin(3600, 10_000, clock=Clock())
    join.remember("r1", answer([0, 1, 2, 3], [0, 1, 1, 3], [0, 1, 1, 2], [False, True, True, True]))
    out = Feed(join).label("r1", [0, 1, 1, 3])
    assert out.result == "joined" and out.instances == 4
    assert out.correct == {"no_defense": 3, "defense": 4, "corrected": 3}
    # undefended wrong only on instance 2, which is flagged: one true positive; flagged+right: 2 (1, 3)
    assert out.confusion == {
        ("flagged", "wrong"): 1,
        ("flagged", "correct"): 2,
        ("unflagged", "wrong"): 0,
        ("unflagged", "correct"): 1,
    }


def test_duplicate_labels_count_once_unknown_and_late_are_told_apart():
    clock = Clock()
    join = FeedbackJoin(60, 10_000, clock=clock)
    join.remember("r1", answer([1], [1], [1], [False]))
    feed = Feed(join)
    assert feed.label("r1", [1]).result == "joined"
    assert feed.label("r1", [1]).result == "duplicate"
    assert feed.label("nope", [1]) is None  # not held: it waits until the tail has read past its arrival
    assert [o.result for o in feed.settle()] == ["unknown"]
    clock.t += 61
    assert feed.label("r1", [1]) is None and [o.result for o in feed.settle()] == ["late"] and len(join) == 0


def test_label_count_mismatch_is_a_shape_error():
    join = FeedbackJoin(60, 100, clock=Clock())
    join.remember("r1", answer([1, 2], [1, 2], [1, 2], [False, False]))
    error = Feed(join).label("r1", [1])
    assert isinstance(error, DecodeError) and error.reason == "shape"


def test_memory_is_bounded_by_instances_oldest_first():
    join = FeedbackJoin(3600, 10, clock=Clock())
    for i in range(6):
        join.remember(f"r{i}", answer([0, 0, 0], [0, 0, 0], [0, 0, 0], [False] * 3))
    assert join.instances <= 10 and len(join) == 3
    feed = Feed(join)
    assert feed.label("r0", [0, 0, 0]) is None and [o.result for o in feed.settle()] == ["late"]
    assert feed.label("r5", [0, 0, 0]).result == "joined"


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"", "decode"),
        (b"{", "decode"),
        (b'["x"]', "schema"),
        (b'{"labels": [1]}', "schema"),
        (b'{"id": "a", "labels": "1"}', "schema"),
        (b'{"id": "a", "labels": [1.5]}', "dtype"),
        (b'{"id": "a", "labels": [true]}', "dtype"),
        (b'{"id": "a", "labels": [-1]}', "dtype"),
    ],
)
def test_malformed_feedback(value, reason):
    with pytest.raises(DecodeError) as ei:
        parse_feedback(value)
    assert ei.value.reason == reason


def test_rebuild_reads_answers_of_every_family_back():
    """The output topic is the changelog: answers written by encode() are read back into the join."""
    records = []
    for i, fmt in enumerate(["v2", "v1", "npy", "proto", "triton"]):
        payload, headers = encode_request(np.zeros((2, 4), np.float32), fmt, f"id-{fmt}")
        req = decode(RawRecord("in", 0, i, b"k", payload, headers), (4,), 1 << 20)
        value, out_headers = encode(
            req,
            answer([i, 1], [i, 1], [i, 2], [True, False]),
            ANSWER_INFO,
        )
        records.append(record("out", value, out_headers, 1_000_000 + i))
    records.append(record("out", b"not ours", [], 1))
    join = FeedbackJoin(3600, 1000, clock=lambda: 1_000.5)

    assert sum(read_record(join, rec, "shadow") for rec in records) == 5
    out = Feed(join).label("id-proto", [3, 1])
    assert out.result == "joined" and out.correct == {"no_defense": 2, "defense": 2, "corrected": 1}


def test_a_label_waits_for_its_answer_and_is_unknown_only_once_the_tail_has_read_past_it():
    clock = Clock()
    join = FeedbackJoin(3600, 1000, clock=clock)
    feed = Feed(join)
    assert feed.label("r1", [1]) is None and join.pending == 1
    assert feed.label("nobody", [1]) is None and join.pending == 2
    assert join.settle(placed=lambda arrival: False) == [] and join.pending == 2  # nothing read yet
    join.remember("r1", answer([1], [0], [1], [False]))  # the tail reads r1's answer
    ((token, outcome),) = join.settle(placed=lambda arrival: False)
    assert token == "0@0" and outcome.result == "joined" and join.pending == 1
    ((token, outcome),) = join.settle(placed=lambda arrival: arrival <= clock.t)  # read past its arrival
    assert token == "0@1" and outcome.result == "unknown" and join.pending == 0


def test_a_held_label_whose_count_is_wrong_for_its_answer_comes_back_as_a_shape_error():
    join = FeedbackJoin(3600, 1000, clock=Clock())
    assert Feed(join).label("r1", [1, 2, 3]) is None
    join.remember("r1", answer([1], [0], [1], [False]))
    ((token, outcome),) = join.settle(placed=lambda arrival: False)
    assert token == "0@0" and isinstance(outcome, DecodeError) and outcome.reason == "shape"


def test_too_many_held_labels_are_unplaced_with_a_reason():
    join = FeedbackJoin(3600, 1000, clock=Clock(), max_pending=2)
    feed = Feed(join)
    assert feed.label("a", [1]) is None and feed.label("b", [1]) is None
    outcome = feed.label("c", [1])
    assert (outcome.result, outcome.reason) == ("unplaced", "pending_full") and join.pending == 2


def test_an_answer_without_predictions_is_unplaced_not_unknown():
    join = FeedbackJoin(3600, 1000, clock=Clock())
    join.remember("r1", {"corrected": np.array([1]), "is_adversarial": np.array([False])})
    outcome = Feed(join).label("r1", [1])
    assert (outcome.result, outcome.reason) == ("unplaced", "answer_without_predictions")


def test_an_answer_read_twice_keeps_its_labels_so_nothing_counts_twice():
    """At-least-once answers a redone request again; every replica reads both answers."""
    join = FeedbackJoin(3600, 1000, clock=Clock())
    join.remember("r1", answer([1, 2], [1, 2], [1, 2], [False, False]))
    feed = Feed(join)
    assert feed.label("r1", [1, 2]).instances == 2
    join.remember("r1", answer([1, 2], [1, 2], [1, 2], [False, False]))
    assert feed.label("r1", [1, 2]).result == "duplicate"


def test_a_shadow_record_joins_its_answer_whichever_is_read_first():
    shadow = answer([1, 1], [2, 2], [2, 1], [True, False])
    for order in ("shadow first", "answer first"):
        join = FeedbackJoin(3600, 1000, clock=Clock())
        shadow_rec = record("shadow", encode_shadow("r1", "a", "2", shadow))
        if order == "shadow first":
            assert read_record(join, shadow_rec, "shadow")
        join.remember("r1", answer([1, 1], [1, 1], [1, 1], [False, False]), None, "a", "1")
        if order == "answer first":
            assert read_record(join, shadow_rec, "shadow")
        out = Feed(join).label("r1", [2, 1])
        by_role = {v.role: v for v in out.versions}
        assert by_role["shadow"].version == "2" and by_role["shadow"].correct["corrected"] == 2, order
        assert by_role["serving"].correct["corrected"] == 1, order
    assert not read_record(join, record("shadow", b"{broken"), "shadow")


def test_answer_records_and_shadow_records_are_read_into_the_join():
    payload, headers = encode_request(np.zeros((3, 4), np.float32), "npy", "r1")
    req = decode(RawRecord("in", 0, 0, None, payload, headers), (4,), 1 << 20)
    value, out_headers = encode(req, answer([1, 2, 0], [2, 2, 1], [1, 2, 1], [False, False, True]), ANSWER_INFO)
    join = FeedbackJoin(3600, 1000, clock=Clock())
    assert read_record(join, record("out", value, out_headers, 1_000_000), "shadow") and join.instances == 3
    shadow = answer([0, 0, 0], [1, 1, 1], [0, 0, 1], [False, False, True])
    assert read_record(join, record("shadow", encode_shadow("r1", "adae", "2", shadow)), "shadow")
    out = Feed(join).label("r1", [1, 2, 1])
    assert out.result == "joined" and {v.role: v.correct["corrected"] for v in out.versions} == {
        "serving": 3,
        "shadow": 1,
    }
    assert not read_record(join, record("out", b"not an answer", [("request-id", b"r2")]), "shadow")


def test_an_answer_record_read_twice_keeps_its_labels():
    """A redelivered request is answered twice; every replica reads both records from the output topic."""
    payload, headers = encode_request(np.zeros((2, 4), np.float32), "v2", "r1")
    req = decode(RawRecord("in", 0, 0, None, payload, headers), (4,), 1 << 20)
    value, out_headers = encode(req, answer([1, 2], [2, 2], [1, 2], [False, True]), ANSWER_INFO)
    join = FeedbackJoin(3600, 1000, clock=Clock())
    read_record(join, record("out", value, out_headers, 1_000_000), None)
    feed = Feed(join)
    assert feed.label("r1", [1, 2]).result == "joined"
    read_record(join, record("out", value, out_headers, 1_000_500), None)
    assert feed.label("r1", [1, 2]).result == "duplicate"


# ---------------------------------------------------------------- decisions in order, scoped to the commit
def test_labels_of_a_partition_are_decided_in_order_and_other_partitions_do_not_wait():
    join = FeedbackJoin(3600, 1000, clock=Clock())
    join.remember("r1", answer([1], [1], [1], [False]))
    p0, p1 = Feed(join, 0), Feed(join, 1)
    assert p0.label("later", [1]) is None  # its answer is not read yet
    assert p0.label("r1", [1]) is None  # decidable, but behind a held label of its partition
    assert p1.label("r1", [1]).result == "joined"  # another partition: not held up
    join.remember("later", answer([0], [0], [0], [False]))
    assert [(t, o.result) for t, o in join.settle(placed=lambda arrival: False)] == [
        ("0@0", "joined"),
        ("0@1", "duplicate"),  # r1's instance was labelled by partition 1's record
    ]


def test_outcomes_are_counted_only_once_their_label_records_are_committed():
    metrics = Counted()
    join = FeedbackJoin(3600, 1000, metrics=metrics, clock=Clock())
    join.remember("r1", answer([1, 2], [1, 2], [1, 2], [False, False]))
    feed = Feed(join)
    feed.label("r1", [1, 2])
    feed.label("r1", [1, 2])
    feed.label("nope", [1])
    feed.settle()
    assert metrics.results == [] and join.journal.uncommitted == 3
    join.journal.commit({("labels", 0): 2})  # the next offset to read: records 0 and 1 are committed
    assert metrics.results == ["joined", "duplicate"] and join.journal.uncommitted == 1
    join.journal.commit({("labels", 0): 2, ("labels", 1): 9})  # again, and another partition: nothing new
    assert metrics.results == ["joined", "duplicate"]
    join.journal.commit({("labels", 0): 3})
    assert metrics.results == ["joined", "duplicate", "unknown"] and join.journal.uncommitted == 0


def test_a_label_rolled_back_with_its_transaction_joins_again_and_counts_once():
    """The abort's redo reads the labels again from the committed offset: they must join as they did the
    first time (before, the first reading's marks made each a duplicate with no evidence: issue 38)."""
    metrics = Counted()
    join = FeedbackJoin(3600, 1000, metrics=metrics, clock=Clock())
    join.remember("r1", answer([1, 2], [1, 2], [1, 2], [False, False]), None, "a", "1")
    join.remember("r2", answer([0], [0], [0], [False]), None, "a", "1")
    first = Feed(join)
    assert [first.label(*x).result for x in (("r1", [1, 2]), ("r1", [1, 2]), ("r2", [0]))] == [
        "joined",
        "duplicate",
        "joined",
    ]
    assert join.forget_partition("labels", 0) == 3  # aborted: every decision undone
    redo = Feed(join)
    outcomes = [redo.label(*x) for x in (("r1", [1, 2]), ("r1", [1, 2]), ("r2", [0]))]
    assert [o.result for o in outcomes] == ["joined", "duplicate", "joined"]
    assert [sum(e.counts.instances for e in o.evidence) for o in outcomes] == [2, 0, 1]
    join.journal.commit({("labels", 0): 3})
    assert metrics.results == ["joined", "duplicate", "joined"]  # once each: the aborted ones never counted


def test_rolling_back_one_partition_keeps_what_another_partition_decided():
    join = FeedbackJoin(3600, 1000, metrics=Counted(), clock=Clock())
    join.remember("r1", answer([1, 2], [1, 2], [1, 2], [False, False]))
    assert Feed(join, 0).label("r1", [1, 2]).result == "joined"
    join.journal.commit({("labels", 0): 1})
    assert Feed(join, 1).label("r1", [1, 2]).result == "duplicate"
    join.forget_partition("labels", 1)  # partition 1 redone: partition 0's committed label still holds
    assert Feed(join, 1).label("r1", [1, 2]).result == "duplicate"
    join.forget_partition("labels", 0)  # nothing open there: the committed marks stay
    assert Feed(join, 2).label("r1", [1, 2]).result == "duplicate"
