"""Offset tracking for at-least-once delivery with batches that mix polls and partitions.

A record is "done" once its output (or dead-letter) record is acked by the broker. The committable
offset of a partition is the lowest offset not yet done (or one past the highest seen when all are):
everything below it is done, so committing it never skips unpublished work. Acks arrive on the
producer's I/O thread, hence the lock.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Hashable, Iterable


class _Partition:
    __slots__ = ("order", "done", "next_offset", "committed")

    def __init__(self) -> None:
        self.order: deque[int] = deque()  # offsets in arrival (= offset) order, not yet known contiguous-done
        self.done: set[int] = set()
        self.next_offset: int | None = None  # one past the highest offset seen
        self.committed: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[Hashable, _Partition] = {}

    def add(self, tp: Hashable, offset: int) -> None:
        with self._lock:
            p = self._parts.setdefault(tp, _Partition())
            p.order.append(offset)
            p.next_offset = offset + 1 if p.next_offset is None else max(p.next_offset, offset + 1)

    def done(self, tp: Hashable, offset: int) -> None:
        with self._lock:
            p = self._parts.get(tp)
            if p is None:  # partition revoked meanwhile; the new owner redoes it
                return
            p.done.add(offset)
            while p.order and p.order[0] in p.done:
                p.done.discard(p.order.popleft())

    def in_flight(self, tp: Hashable | None = None) -> int:
        with self._lock:
            parts = [self._parts[tp]] if tp is not None and tp in self._parts else ([] if tp is not None else self._parts.values())
            return sum(len(p.order) for p in parts)

    def commit_point(self, tp: Hashable) -> int | None:
        with self._lock:
            p = self._parts.get(tp)
            if p is None or p.next_offset is None:
                return None
            return p.order[0] if p.order else p.next_offset

    def to_commit(self) -> dict[Hashable, int]:
        """Commit points that moved since the last mark_committed."""
        out = {}
        with self._lock:
            for tp, p in self._parts.items():
                if p.next_offset is None:
                    continue
                point = p.order[0] if p.order else p.next_offset
                if point != p.committed:
                    out[tp] = point
        return out

    def mark_committed(self, offsets: dict[Hashable, int]) -> None:
        with self._lock:
            for tp, off in offsets.items():
                if tp in self._parts:
                    self._parts[tp].committed = off

    def remove(self, tps: Iterable[Hashable]) -> None:
        with self._lock:
            for tp in tps:
                self._parts.pop(tp, None)
