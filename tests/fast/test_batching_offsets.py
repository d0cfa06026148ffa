"""Batcher, Assembler and OffsetTracker without Kafka."""

from __future__ import annotations

import threading

import numpy as np

from adae_stream.codecs import RawRecord, Request
from adae_stream.stream.batcher import Assembler, Batcher
from adae_stream.stream.offsets import OffsetTracker


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def req(rid, n, arrival=0.0, offset=0):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 1000 * offset
    return Request(rid, x, "v2", RawRecord("t", 0, offset, None, b"", [], 0), arrival=arrival)


def test_batches_respect_size_and_delay():
    clock = Clock()
    b = Batcher(max_batch_size=10, max_delay_s=0.05, clock=clock)
    assert b.take() is None and b.time_until_due() is None
    b.add(req("a", 3, arrival=0.0))
    assert b.take() is None  # not full, not late
    assert abs(b.time_until_due() - 0.05) < 1e-9
    clock.t = 0.06
    batch = b.take()
    assert batch.size == 3 and [s.request.id for s in batch.segments] == ["a"]
    b.add(req("b", 6, arrival=0.06))
    b.add(req("c", 6, arrival=0.06))
    batch = b.take()  # 12 pending >= 10: due now, capped at 10
    assert batch.size == 10
    assert [(s.request.id, s.start, s.stop) for s in batch.segments] == [("b", 0, 6), ("c", 0, 4)]
    assert b.pending_instances == 2
    assert b.take() is None
    assert b.take(force=True).size == 2


def test_large_request_split_and_reassembled_in_order():
    b = Batcher(max_batch_size=4, max_delay_s=0.0)
    big, small = req("big", 10, offset=1), req("small", 1, offset=2)
    b.add(big)
    b.add(small)
    asm = Assembler()
    done = []
    while (batch := b.take()) is not None:
        assert batch.size <= 4
        result = {"v": batch.x[:, 0] * 2}
        done += asm.add(batch, result)
    assert [r.id for r, _ in done] == ["big", "small"]
    np.testing.assert_array_equal(done[0][1]["v"], big.instances[:, 0] * 2)
    np.testing.assert_array_equal(done[1][1]["v"], small.instances[:, 0] * 2)
    assert len(asm) == 0


def test_discard_drops_remaining_slices():
    b = Batcher(max_batch_size=4, max_delay_s=0.0)
    big = req("big", 10)
    b.add(big)
    asm = Assembler()
    batch = b.take()
    asm.add(batch, {"v": batch.x[:, 0]})
    b.discard(big)
    asm.discard(big)
    assert b.take(force=True) is None and b.pending_instances == 0 and len(asm) == 0


def test_zero_instance_request_completes():
    b = Batcher(max_batch_size=4, max_delay_s=0.0)
    b.add(Request("empty", np.zeros((0, 2), np.float32), "v2", RawRecord("t", 0, 0, None, b"", [], 0)))
    batch = b.take()
    ((r, res),) = Assembler().add(batch, {"v": np.zeros(0)})
    assert r.id == "empty" and res["v"].shape == (0,)


def test_commit_point_is_contiguous_done_prefix():
    t = OffsetTracker()
    tp = ("t", 0)
    for off in (10, 11, 12, 13):
        t.add(tp, off)
    assert t.commit_point(tp) == 10
    t.done(tp, 12)
    t.done(tp, 13)
    assert t.commit_point(tp) == 10  # 10 and 11 still in flight: never commit past them
    assert t.to_commit() == {tp: 10}
    t.mark_committed({tp: 10})
    assert t.to_commit() == {}
    t.done(tp, 10)
    assert t.commit_point(tp) == 11
    t.done(tp, 11)
    assert t.commit_point(tp) == 14 and t.in_flight(tp) == 0
    assert t.to_commit() == {tp: 14}


def test_partitions_independent_and_removal():
    t = OffsetTracker()
    a, b = ("t", 0), ("t", 1)
    t.add(a, 0)
    t.add(b, 5)
    t.done(b, 5)
    assert t.to_commit() == {a: 0, b: 6}
    t.remove([a])
    t.done(a, 0)  # ack after revocation: ignored
    assert t.to_commit() == {b: 6}


def test_concurrent_acks():
    t = OffsetTracker()
    tp = ("t", 0)
    for off in range(5000):
        t.add(tp, off)
    offsets = list(range(5000))
    np.random.default_rng(0).shuffle(offsets)
    threads = [threading.Thread(target=lambda part=offsets[i::4]: [t.done(tp, o) for o in part]) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t.commit_point(tp) == 5000
