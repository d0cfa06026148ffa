"""Labels counted once, with their evidence, through the faults that make the loop redo work: answers the
broker rejects (one per transaction, and two in one window), an eviction mid-transaction, and kafka-python's
flush failing the way it does after splitting an oversized batch. Each fault is injected, on the real loop
over the client seam's stand-ins (tests/loop_harness.py); tests/broker/test_evidence_faults.py does the
same on Apache Kafka with real processes and a SIGKILL.

What "counted once" means here, each checked against the others: the ledger (read_committed) holds one
evidence record per label and the labelled instances the labels carry; the outcomes the metrics were given
are one "joined" per label; and the evidence series equal the ledger's sums.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from adae_stream.clients import KafkaError, MessageSizeTooLargeError
from adae_stream.feedback.evidence import Counts
from adae_stream.feedback.ledger import decode_evidence
from tests.loop_harness import Harness, instances
from tests.stand_ins import StandInProducer

LABELS = 20  # requests of 2 instances, each labelled once


def ledger(h: Harness) -> list[Counts]:
    """The evidence on the ledger as a read_committed reader sees it: one entry per record."""
    return [sum((e.counts for e in decode_evidence(r["value"])), Counts()) for r in h.to("out-evidence")]


def counted(h: Harness) -> Counter:
    return Counter(h.outcomes())


def counted_evidence(h: Harness) -> Counts:
    """The evidence the outcomes handed to the metrics carry (what the evidence series count)."""
    return sum((e.counts for call in h.metrics.calls["feedback_outcome"] for e in call[0].evidence), Counts())


def answered(h: Harness, n: int = LABELS) -> Harness:
    for i in range(n):
        h.request(instances([0.1, 0.9], first_class=i), f"r{i}")
    h.turn()
    assert len(h.answers()) == n
    return h


def check_counted_once(h: Harness, labels: int = LABELS) -> None:
    records = ledger(h)
    by_label = Counter(json.loads(r["value"])["id"] for r in h.to("out-evidence"))
    assert by_label == Counter(f"r{i}" for i in range(labels)), by_label  # each label's evidence, once
    assert len(records) == labels, f"{len(records)} evidence records for {labels} labels"
    assert sum(c.instances for c in records) == 2 * labels
    assert counted(h)["joined"] == labels and counted(h)["duplicate"] == 0, counted(h)
    assert counted_evidence(h) == sum(records, Counts())  # the series agree with the ledger
    assert h.pipeline.failure is None and h.all_settled("labels")


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_labels_count_once_through_answers_the_broker_rejects_one_per_transaction(delivery):
    """Issue 38's first case: with one answer in ten labels rejected, 162 of 600 labels reached the ledger
    on Apache Kafka, because each abort's redo took the labels for duplicates."""
    h = answered(
        Harness(
            kafka={"feedback_topic": "labels", "commit_interval_ms": 3_600_000, "commit_when_idle": False},
            delivery=delivery,
        )
    )
    rejected = 4
    h.broker.reject["out"] = [MessageSizeTooLargeError(f"too large {i}") for i in range(rejected)]
    for i in range(LABELS):
        h.label(f"r{i}", [0, 1])
        if i % 5 == 4:  # an answer in the same window as the labels: the broker rejects it
            h.request(instances([0.3]), f"big{i}")
    h.turns_until(lambda: h.all_settled() and h.all_settled("labels") and not h.sink.doomed, turns=20)
    check_counted_once(h)
    assert h.dead_letters() == ["rejected"] * rejected
    assert len(h.clients.producers) == 1 + rejected  # each rejection redone on a new producer
    if delivery == "exactly_once":  # the labels were redone: their first evidence was aborted with its answer
        everything = h.broker.records("out-evidence", committed_only=False)
        assert len(everything) > LABELS


def test_labels_count_once_when_two_answers_are_rejected_in_one_window():
    """Issue 38, 1b: two rejected answers in one window looped (rejected 5 and 4 times) and killed the
    process. Here each is rejected once and dead-lettered once, and the labels around them count once."""
    h = answered(
        Harness(
            kafka={"feedback_topic": "labels", "commit_interval_ms": 3_600_000, "commit_when_idle": False},
            delivery="exactly_once",
        )
    )
    a, b = MessageSizeTooLargeError("a"), MessageSizeTooLargeError("b")
    h.producer.hold_acks = True  # both answers in flight together, as in one produce request
    for i in range(LABELS):
        h.label(f"r{i}", [0, 1])
    h.request(instances([0.3]), "big-a")
    h.request(instances([0.4]), "big-b")
    h.pipeline.turn()  # the labels joined, their evidence in flight
    h.pipeline.path.score(force=True)
    big = [s for s in h.producer.sent if s["topic"] == "out" and not s["future"].is_done]
    assert len(big) == 2
    big[0]["future"].failure(a)  # each batch rejected by the broker on its own account
    big[1]["future"].failure(b)
    h.turns_until(lambda: h.all_settled() and h.all_settled("labels") and not h.sink.doomed, turns=20)
    check_counted_once(h)
    assert sorted(h.dead_letters()) == ["rejected", "rejected"]
    assert len(h.clients.producers) == 2  # both condemned in the one redo: no second abort


def test_labels_of_a_transaction_lost_to_an_eviction_count_once():
    """Issue 38's second case (563 and 560 of 600 after one eviction): the partitions are lost with the
    open transaction, which is aborted; the labels are read again and count once."""
    h = answered(
        Harness(
            kafka={"feedback_topic": "labels", "commit_interval_ms": 3_600_000, "commit_when_idle": False},
            delivery="exactly_once",
        )
    )
    for i in range(LABELS):
        h.label(f"r{i}", [0, 1])
    h.pipeline.turn()  # joined: their evidence is in the open transaction
    assert h.join is not None and h.join.journal.uncommitted == LABELS and ledger(h) == []
    h.clients.consumers[-1].evict()  # the session timed out (a pause, as in a rebalance)
    h.turns_until(lambda: len(ledger(h)) == LABELS and h.all_settled("labels"))
    check_counted_once(h)
    assert len(h.broker.records("out-evidence", committed_only=False)) == 2 * LABELS  # once aborted, once not


class SplitBatchFlush(StandInProducer):
    """kafka-python after it split an oversized batch: every record settles, but flush() raises."""

    def flush(self, timeout=None):
        super().flush(timeout)
        raise KafkaError("UnknownError: Future not done")


class NeverSettles(StandInProducer):
    """A client whose sends are never acked or failed, and whose flush() raises: only a new one helps."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hold_acks = True

    def flush(self, timeout=None):
        raise KafkaError("UnknownError: Future not done")


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_a_flush_that_raises_after_every_record_settled_costs_nothing(delivery):
    h = Harness(kafka={"feedback_topic": "labels"}, delivery=delivery)
    h.clients.producer_type = SplitBatchFlush
    h.pipeline.session.replace_producer()  # the loop's producer from now on
    h.pipeline.outlet.build()
    answered(h)
    for i in range(LABELS):
        h.label(f"r{i}", [0, 1])
    h.turns_until(lambda: h.all_settled("labels"))
    check_counted_once(h)
    assert len(h.clients.producers) == 2  # nothing redone


def test_sends_that_never_settle_doom_the_work_which_is_redone_on_a_new_producer():
    h = Harness(kafka={"feedback_topic": "labels", "delivery_timeout_s": 2.1, "linger_ms": 0}, delivery="exactly_once")
    answered(h)
    h.clients.producer_type = NeverSettles
    h.pipeline.session.replace_producer()
    h.pipeline.outlet.build()
    h.clients.producer_type = StandInProducer  # the next one works
    for i in range(LABELS):
        h.label(f"r{i}", [0, 1])
    h.turns_until(lambda: h.all_settled("labels") and not h.sink.doomed)
    check_counted_once(h)
    assert isinstance(h.clients.producers[-2], NeverSettles) and len(h.clients.producers) == 3
    assert np.all([a["id"].startswith("r") for a in h.answers()])
