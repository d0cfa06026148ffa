"""The feedback join without Kafka: counts, duplicates, late and unknown labels, bounds, rebuild."""

from __future__ import annotations

import numpy as np
import pytest

from adae_stream.errors import DecodeError
from adae_stream.stream.codecs import RawRecord, decode, encode, encode_request
from adae_stream.stream.feedback import FeedbackJoin, parse_feedback, rebuild
from tests.answer_info import ANSWER_INFO


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def answer(no_defense, defense, corrected, flags):
    return {
        "no_defense": np.array(no_defense),
        "defense": np.array(defense),
        "corrected": np.array(corrected),
        "is_adversarial": np.array(flags, bool),
        "instance_score": np.zeros(len(flags), np.float32),
    }


def test_joined_counts_each_prediction_and_the_flag_confusion():
    join = FeedbackJoin(3600, 10_000, clock=Clock())
    join.remember("r1", answer([0, 1, 2, 3], [0, 1, 1, 3], [0, 1, 1, 2], [False, True, True, True]))
    out = join.label("r1", np.array([0, 1, 1, 3]))
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
    assert join.label("r1", np.array([1])).result == "joined"
    assert join.label("r1", np.array([1])).result == "duplicate"
    assert join.label("nope", np.array([1])).result == "unknown"
    clock.t += 61
    assert join.label("r1", np.array([1])).result == "late" and len(join) == 0


def test_label_count_mismatch_is_a_shape_error():
    join = FeedbackJoin(60, 100, clock=Clock())
    join.remember("r1", answer([1, 2], [1, 2], [1, 2], [False, False]))
    with pytest.raises(DecodeError) as ei:
        join.label("r1", np.array([1]))
    assert ei.value.reason == "shape"


def test_memory_is_bounded_by_instances_oldest_first():
    join = FeedbackJoin(3600, 10, clock=Clock())
    for i in range(6):
        join.remember(f"r{i}", answer([0, 0, 0], [0, 0, 0], [0, 0, 0], [False] * 3))
    assert join.instances <= 10 and len(join) == 3
    assert join.label("r0", np.array([0, 0, 0])).result == "late"
    assert join.label("r5", np.array([0, 0, 0])).result == "joined"


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
        records.append(type("Rec", (), {"value": value, "headers": out_headers, "timestamp": 1_000_000 + i})())
    records.append(type("Rec", (), {"value": b"not ours", "headers": [], "timestamp": 1})())
    join = FeedbackJoin(3600, 1000, clock=lambda: 1_000.5)

    assert rebuild(join, records) == 5
    out = join.label("id-proto", np.array([3, 1]))
    assert out.result == "joined" and out.correct == {"no_defense": 2, "defense": 2, "corrected": 1}
