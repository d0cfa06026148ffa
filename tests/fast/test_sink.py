"""The per-record error policy of the sink, without a broker.

The producer here is the stand-in of the client seam (tests/stand_ins.py): each send is acked, or failed
with the error a real client or broker gives, the way kafka-python reports it, so the policy (which
failures cost one record, which stop the service) is checked case by case.
tests/broker/test_poison_records.py runs the same policy against the real broker and process.
"""

from __future__ import annotations

import numpy as np
import pytest
from kafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumberError,
    TopicAuthorizationFailedError,
)
from kafka.structs import TopicPartition

from adae_stream.clients.build import DEAD_LETTER_OVERHEAD
from adae_stream.codecs import RawRecord, Request
from adae_stream.config import KafkaConfig
from adae_stream.stream.offsets import OffsetTracker
from adae_stream.stream.record_limits import clean_headers, is_record_error, record_size
from adae_stream.stream.sink import Sink
from tests.answer_info import ANSWER_INFO
from tests.stand_ins import StandInProducer

LIMIT = 4096
RESULT = {
    "corrected": np.array([1]),
    "is_adversarial": np.array([False]),
    "instance_score": np.array([0.1], np.float32),
}
INFO = ANSWER_INFO


class Outcomes:
    def __init__(self) -> None:
        self.done: list[tuple[str, str | None]] = []

    def request_done(self, status, reason=None, end_to_end_s=None):
        self.done.append((status, reason))


@pytest.fixture
def setup():
    producer, tracker, outcomes = StandInProducer(), OffsetTracker(), Outcomes()
    k = KafkaConfig(output_topic="out", dead_letter_topic="dlq", max_message_bytes=LIMIT)
    sink = Sink(producer, k, tracker, outcomes)
    return sink, producer, tracker, outcomes


def record(offset=0, key=b"k", value=b"{}", headers=()):
    return RawRecord("in", 0, offset, key, value, list(headers), 1000)


def request(rid="r1", offset=0, key=b"k"):
    rec = record(offset, key)
    return Request(rid, np.zeros((1, 2), np.float32), "v2", rec)


def test_answer_acked_marks_the_offset_done(setup):
    sink, producer, tracker, outcomes = setup
    tracker.add(TopicPartition("in", 0), 0)
    sink.answer(request(), RESULT, INFO)
    producer.ack_all()
    assert [s["topic"] for s in producer.sent] == ["out"]
    assert tracker.commit_point(TopicPartition("in", 0)) == 1
    assert outcomes.done == [("ok", None)] and sink.failure is None


def test_answer_that_cannot_be_encoded_is_dead_lettered(setup):
    sink, producer, _tracker, outcomes = setup
    sink.answer(request(rid="\ud800"), RESULT, INFO)
    producer.ack_all()
    (dlq,) = producer.sent
    h = dict(dlq["headers"])
    assert dlq["topic"] == "dlq" and h["error-reason"] == b"encode" and b"UnicodeEncodeError" in h["error-message"]
    assert outcomes.done == [("dead_letter", "encode")]


def test_answer_over_the_limit_is_dead_lettered_before_sending(setup):
    sink, producer, _, outcomes = setup
    sink.answer(request(rid="x" * LIMIT), RESULT, INFO)
    producer.ack_all()
    (dlq,) = producer.sent
    assert dlq["topic"] == "dlq" and dict(dlq["headers"])["error-reason"] == b"answer_too_large"
    assert outcomes.done == [("dead_letter", "answer_too_large")]


def test_answer_refused_at_send_goes_to_the_dead_letter_topic(setup):
    """The client's own size check: the producer is untouched, so the record is dead-lettered at once."""
    sink, producer, _, outcomes = setup
    producer.broker.raise_at_send["out"] = MessageSizeTooLargeError("record too large")
    sink.answer(request(), RESULT, INFO)
    assert sink.failure is None and not sink.doomed
    sink.flush(1)  # the dead letter is sent by the caller's thread, never from the callback
    assert [s["topic"] for s in producer.sent if s["future"].succeeded()] == ["dlq"]
    assert dict(producer.sent[-1]["headers"])["error-reason"] == b"rejected"
    assert outcomes.done == [("dead_letter", "rejected")]


def test_a_broker_rejection_dooms_the_work_in_flight_and_the_redo_dead_letters_that_record(setup):
    """After a broker's rejection kafka-python fails every record in flight with the same error: only the
    first is the record's own. Redone (the loop aborts or replaces the producer), that record goes to the
    dead-letter topic and the others are answered."""
    sink, producer, tracker, outcomes = setup
    for offset in (0, 1):
        tracker.add(TopicPartition("in", 0), offset)
    producer.broker.reject["out"] = [MessageSizeTooLargeError("too large")]
    sink.answer(request(offset=0), RESULT, INFO)
    sink.answer(request(rid="r2", offset=1), RESULT, INFO)  # failed by kafka-python with the same error
    sink.flush(1)
    assert sink.doomed and sink.failure is None
    assert [s["topic"] for s in producer.sent] == ["out", "out"] and outcomes.done == []
    fresh = StandInProducer()
    sink.redone(fresh, lambda: None)
    assert not sink.doomed
    sink.answer(request(offset=0), RESULT, INFO)
    sink.answer(request(rid="r2", offset=1), RESULT, INFO)
    sink.flush(1)
    assert [s["topic"] for s in fresh.sent] == ["dlq", "out"]
    assert dict(fresh.sent[0]["headers"])["error-reason"] == b"rejected"
    assert outcomes.done == [("dead_letter", "rejected"), ("ok", None)]
    assert tracker.commit_point(TopicPartition("in", 0)) == 2


def _redo_dead_letter(sink, offset: int) -> StandInProducer:
    """The first dead letter of in-0@offset rejected by the broker, then the redo on a fresh producer."""
    sink.dead_letter(record(offset, value=b"v" * 100), "decode", "bad JSON")
    sink.flush(1)
    assert sink.doomed and sink.failure is None
    fresh = StandInProducer()
    sink.redone(fresh, lambda: None)
    sink.dead_letter(record(offset, value=b"v" * 100), "decode", "bad JSON")
    return fresh


def test_dead_letter_rejected_then_minimal_record_keeps_the_coordinates(setup):
    sink, producer, tracker, _outcomes = setup
    tracker.add(TopicPartition("in", 0), 7)
    producer.broker.reject["dlq"] = [MessageSizeTooLargeError("too large")]
    fresh = _redo_dead_letter(sink, 7)
    sink.flush(1)
    (minimal,) = fresh.sent
    assert minimal["future"].succeeded()
    h = dict(minimal["headers"])
    assert minimal["value"] == b"" and h["error-minimal"] == b"true"
    assert (h["source-topic"], h["source-partition"], h["source-offset"]) == (b"in", b"0", b"7")
    assert h["error-reason"] == b"decode" and b"rejected" in h["error-message"]
    assert tracker.commit_point(TopicPartition("in", 0)) == 8 and sink.failure is None


def test_minimal_record_rejected_too_is_fatal_and_the_offset_stays_uncommitted(setup):
    sink, producer, tracker, _ = setup
    tracker.add(TopicPartition("in", 0), 3)
    producer.broker.reject["dlq"] = [MessageSizeTooLargeError("a")]
    fresh = StandInProducer()
    fresh.broker.reject["dlq"] = [MessageSizeTooLargeError("b")]
    sink.dead_letter(record(3), "decode", "bad")
    sink.flush(1)
    sink.redone(fresh, lambda: None)
    sink.dead_letter(record(3), "decode", "bad")
    sink.flush(1)
    assert "minimal dead-letter record for in-0@3" in sink.failure and "not committed" in sink.failure
    assert tracker.commit_point(TopicPartition("in", 0)) == 3


@pytest.mark.parametrize(
    "error",
    [
        KafkaTimeoutError("delivery timeout"),
        TopicAuthorizationFailedError("denied"),
        OutOfOrderSequenceNumberError("state lost"),
    ],
)
def test_failures_of_the_service_are_fatal_not_dead_lettered(setup, error):
    sink, producer, tracker, _ = setup
    tracker.add(TopicPartition("in", 0), 0)
    producer.broker.reject["out"] = [error]
    sink.answer(request(), RESULT, INFO)
    sink.flush(1)
    assert sink.failure.startswith("publishing the answer to the request at in-0@0 failed")
    assert [s["topic"] for s in producer.sent] == ["out"]  # nothing dead-lettered
    assert tracker.commit_point(TopicPartition("in", 0)) == 0


def test_first_failure_is_kept(setup):
    sink, producer, _, _ = setup
    producer.broker.raise_at_send["out"] = KafkaTimeoutError("first")
    producer.broker.raise_at_send["dlq"] = KafkaTimeoutError("second")
    sink.answer(request(offset=0), RESULT, INFO)
    sink.dead_letter(record(1), "decode", "bad")
    assert "first" in sink.failure and "second" not in sink.failure


def test_copied_headers_are_made_valid():
    headers = [
        ("trace", None),
        ("ok", b"v"),
        ("error-reason", b"old"),
        ("source-offset", b"1"),
        ("mv", memoryview(b"m")),
    ]
    assert clean_headers(headers) == [("trace", b""), ("ok", b"v"), ("mv", b"m")]


def test_dead_letter_null_header_values_are_sent_as_empty(setup):
    sink, producer, _, _ = setup
    sink.dead_letter(record(headers=[("x-null", None)]), "decode", "bad")
    (dlq,) = producer.sent
    assert ("x-null", b"") in dlq["headers"]


def test_oversized_dead_letter_truncates_value_then_drops_headers(setup):
    sink, producer, _, _ = setup
    big = LIMIT + DEAD_LETTER_OVERHEAD
    sink.dead_letter(record(value=b"v" * (2 * big)), "too_large", "big")
    sink.dead_letter(record(value=b"v" * 10, headers=[("huge", b"h" * big)]), "decode", "bad")
    truncated, dropped = producer.sent
    h = dict(truncated["headers"])
    assert h["error-truncated-from"] == str(2 * big).encode() and 0 < len(truncated["value"]) < big
    assert record_size(truncated["key"], truncated["value"], truncated["headers"]) <= big
    h = dict(dropped["headers"])
    assert "huge" not in h and h["error-headers-dropped"] == b"1" and dropped["value"] == b"v" * 10


def test_key_larger_than_the_dead_letter_limit_gives_a_minimal_record_without_key(setup):
    sink, producer, _, _ = setup
    sink.dead_letter(record(key=b"k" * (LIMIT + DEAD_LETTER_OVERHEAD + 1)), "decode", "bad")
    (dlq,) = producer.sent
    assert dlq["key"] is None and dict(dlq["headers"])["error-minimal"] == b"true"


def test_record_errors_versus_service_errors():
    assert (
        is_record_error(MessageSizeTooLargeError())
        and is_record_error(TypeError("headers"))
        and is_record_error(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    )
    assert not is_record_error(KafkaTimeoutError()) and not is_record_error(TopicAuthorizationFailedError())
    assert not is_record_error(ValueError('Topic name "bad topic!" is illegal'))  # what kafka-python raises at send()


def test_answers_of_a_transaction_we_aborted_are_not_a_failure(setup):
    """Lost partitions or a zombie's refused commit abort the transaction on purpose, and its records are
    redone: kafka-python failing them with TransactionAbortedError stops nothing and dead-letters nothing."""
    from kafka.errors import TransactionAbortedError

    sink, producer, tracker, outcomes = setup
    tracker.add(TopicPartition("in", 0), 0)
    producer.broker.reject["out"] = [TransactionAbortedError()]
    sink.answer(request(), RESULT, INFO)
    sink.flush(1)
    assert sink.failure is None and not sink.doomed and outcomes.done == []
    assert [s["topic"] for s in producer.sent] == ["out"] and tracker.commit_point(TopicPartition("in", 0)) == 0
