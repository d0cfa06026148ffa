"""Rebalance paths of the loop that a healthy broker rarely takes: a committed-offset read that fails, lost
partitions, an aborted transaction. The loop's own parts are real (Assignments, Outlet and the committers
it builds, the Pipeline's record path); the consumer and producer are the client seam's stand-ins
(tests/stand_ins.py), which fail on cue, because a real broker cannot be made to fail one call on demand.
The graceful paths run against the real broker in the broker tests (test_reliability.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from kafka.structs import ConsumerGroupMetadata, TopicPartition

from adae_stream.codecs import RawRecord, Request
from adae_stream.config import BatchingConfig, load_config
from adae_stream.errors import FirstFailure
from adae_stream.scoring import ScorerInfo, ServingDetector
from adae_stream.stream.assignments import Assignments
from adae_stream.stream.commit import TransactionalCommitter
from adae_stream.stream.lanes import Lanes
from adae_stream.stream.offsets import OffsetTracker
from adae_stream.stream.outlet import Outlet
from adae_stream.stream.telemetry import NullMetrics
from tests.stand_ins import MemoryBroker, StandInConsumer, StandInProducer

A, B = TopicPartition("in", 0), TopicPartition("in", 1)


class Scorer:
    info = ScorerInfo(input_shape=(2,), threshold=0.5, n_classes=2, version="test", detector_id="d", classifier_id="c")

    def __call__(self, x):
        raise AssertionError("not scored in these tests")

    def warmup(self, up_to=None):
        pass


GROUP = "adae-stream"


def consumer_at(committed: dict, failures: dict | None = None) -> StandInConsumer:
    """The group's consumer with these committed offsets; ``failures``: tp -> how many reads of it fail."""
    broker = MemoryBroker(partitions=2)
    broker.committed.update({(GROUP, tp): offset for tp, offset in committed.items()})
    consumer = StandInConsumer(broker, GROUP)
    consumer.committed_failures.update(failures or {})
    return consumer


def pipeline(consumer, producer=None, delivery="at_least_once") -> SimpleNamespace:
    """The loop's partition state and its outlet, built on stand-in clients the way a connect builds them."""
    cfg = load_config(
        None,
        environ={},
        overrides={
            "delivery": delivery,
            "kafka": {"bootstrap_servers": "127.0.0.1:1", "commit_interval_ms": 200},
            "metrics": {"enabled": False},
        },
    )
    tracker = OffsetTracker()
    lanes = Lanes(BatchingConfig(), {"x": ServingDetector("x", 1, Scorer())})
    partitions = Assignments(tracker, lanes, "earliest", 1.0)
    producer = producer or StandInProducer(consumer.broker, transactional=delivery == "exactly_once")
    session = SimpleNamespace(consumer=consumer, producer=producer, topic_limits={})
    outlet = Outlet(cfg, session, partitions, NullMetrics(), FirstFailure(), lambda _score: None, lambda: None)  # type: ignore[arg-type]
    outlet.build()
    return SimpleNamespace(partitions=partitions, tracker=tracker, lanes=lanes, outlet=outlet, consumer=consumer)


def request(tp: TopicPartition, offset: int, n: int = 3) -> Request:
    return Request(
        f"{tp.partition}-{offset}",
        np.zeros((n, 2), np.float32),
        "v2",
        RawRecord(tp.topic, tp.partition, offset, None, b"{}"),
    )


def test_failed_committed_read_pauses_and_never_skips_records():
    consumer = consumer_at({A: 10, B: 20}, failures={B: 2})
    p = pipeline(consumer)
    p.partitions.incoming.put({A, B})
    assert p.partitions.position(p.consumer) == {A, B}  # records of both in this poll are skipped
    assert consumer.positions == {A: 10} and consumer.paused == {B}
    assert p.partitions.position(p.consumer) == {B}  # A is read normally now; B still unread: still skipped
    assert B not in consumer.positions and consumer.paused == {B}
    assert p.partitions.position(p.consumer) == {
        B
    }  # sought on this turn: its records in this poll came before the seek
    assert consumer.positions == {A: 10, B: 20} and not consumer.paused
    assert p.partitions.position(p.consumer) == set()
    assert p.partitions.positioned == {A, B}


def test_partition_without_committed_offset_follows_the_reset_policy():
    consumer = consumer_at({})
    consumer.positions[A] = 9  # where a fetch left it
    p = pipeline(consumer)
    p.partitions.incoming.put({A})
    p.partitions.position(p.consumer)
    assert consumer.positions == {A: 0}  # auto_offset_reset earliest


def test_lost_partitions_drop_their_pending_requests():
    p = pipeline(consumer_at({}))
    p.partitions.incoming.put({A, B})
    p.partitions.position(p.consumer)
    (lane,) = p.lanes
    for tp, off in ((A, 0), (B, 0), (A, 1)):
        p.tracker.add(tp, off)
        lane.batcher.add(request(tp, off))
    p.outlet.lose({A})
    pending = [entry[0].record.partition for entry in lane.batcher._queue]
    assert pending == [1] and lane.batcher.pending_instances == 3
    assert p.partitions.assigned == {B} and p.tracker.commit_point(A) is None and p.tracker.commit_point(B) == 0
    assert p.partitions.incoming.empty()  # at-least-once: the partitions we keep go on where they are


def test_lost_partitions_abort_the_open_transaction_and_redo_what_we_keep():
    consumer = consumer_at({A: 5, B: 7})
    producer = StandInProducer(consumer.broker, transactional=True)
    p = pipeline(consumer, producer, delivery="exactly_once")
    assert isinstance(p.outlet.committer, TransactionalCommitter)
    p.partitions.incoming.put({A, B})
    p.partitions.position(p.consumer)
    p.outlet.committer.before_send()
    for tp in (A, B):
        p.tracker.add(tp, 5 if tp == A else 7)
        p.tracker.done(tp, 5 if tp == A else 7)  # answered inside the open transaction, which is now void
    p.outlet.lose({A})
    assert producer.calls == ["begin", "abort"]
    assert p.tracker.to_commit() == {}  # nothing of the aborted transaction can be committed
    assert p.partitions.incoming.get_nowait() == {B}  # B is sought back to its committed offset and redone
    consumer.positions.clear()
    p.partitions.incoming.put({B})
    p.partitions.position(p.consumer)
    assert consumer.positions == {B: 7}


@pytest.mark.parametrize(
    "generation, member, expected",
    [
        (4, "m-1", ["begin", "offsets [8] generation 4", "commit"]),
        (-1, "", ["begin", "abort"]),  # evicted: the heartbeat cleared the generation
        (4, "", ["begin", "abort"]),
    ],
)
def test_a_transaction_is_committed_only_under_a_group_generation(generation, member, expected):
    """The group coordinator takes a transactional offset commit that names no generation unchecked
    (tests/broker/test_exactly_once.py shows it on Apache Kafka), so such a commit would let a zombie's answers
    through: it is aborted, and the partitions are forgotten until the rejoin."""
    consumer = consumer_at({A: 5})
    producer = StandInProducer(consumer.broker, transactional=True)
    consumer.group_metadata = lambda: ConsumerGroupMetadata("g", generation, member)
    p = pipeline(consumer)
    redone: list[bool] = []
    flushed: list[float] = []
    committer = TransactionalCommitter(
        producer,
        consumer,
        p.tracker,
        lambda: {A},
        0.0,
        1.0,
        NullMetrics(),
        flush=lambda timeout_s: flushed.append(timeout_s) or True,
        redo=lambda: redone.append(True),
    )
    committer.before_send()
    p.tracker.add(A, 7)
    p.tracker.done(A, 7)
    committer.commit()
    assert producer.calls == expected and flushed == [1.0]  # flushed before anything is committed
    assert redone == ([] if expected[-1] == "commit" else [True])
    assert p.tracker.to_commit() == ({} if expected[-1] == "commit" else {A: 8})


def test_abandon_without_an_open_transaction_aborts_nothing():
    consumer = consumer_at({})
    producer = StandInProducer(consumer.broker, transactional=True)
    p = pipeline(consumer)
    committer = TransactionalCommitter(
        producer, consumer, p.tracker, lambda: p.partitions.assigned, 0.2, 1.0, NullMetrics(), flush=lambda t: True
    )
    assert committer.abandon() is False and producer.calls == []


def test_partition_state_has_one_owner_that_runs_without_a_pipeline():
    lanes = Lanes(BatchingConfig(), {"x": ServingDetector("x", 1, Scorer()), "y": ServingDetector("y", 1, Scorer())})
    forgotten: list = []
    state = Assignments(OffsetTracker(), lanes, "earliest", 1.0, on_forget=forgotten.append)
    consumer = consumer_at({A: 3})
    state.incoming.put({A, B})
    assert state.position(consumer) == {A, B} and state.positioned == {A, B}
    assert consumer.positions == {A: 3, B: 0}
    x, y = lanes
    for lane, tp in ((x, A), (y, A), (y, B)):
        state.tracker.add(tp, 3)
        lane.batcher.add(request(tp, 3))
    state.forget({A})  # every lane and the tracker let go of A at once
    assert [len(lane.batcher) for lane in lanes] == [0, 1]
    assert state.tracker.commit_point(A) is None and state.tracker.commit_point(B) == 3
    assert state.assigned == {B} and forgotten == [A]
