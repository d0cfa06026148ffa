"""Offset tracking for at-least-once delivery with batches that mix polls and partitions.

A record is "done" once its output (or dead-letter) record is acked by the broker. The committable
offset of a partition is the lowest offset not yet done (or one past the highest seen when all are):
everything below it is done, so committing it never skips unpublished work. Acks arrive on the
producer's I/O thread, hence the lock.

What is decided in the checkpoint (the join's label decisions, feedback/journal.py) listens to
``mark_committed``: the one place both delivery modes report what the broker has committed.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping


class _Partition:
    __slots__ = ("committed", "done", "next_offset", "order")

    def __init__(self) -> None:
        self.order: deque[int] = deque()  # offsets in arrival (= offset) order, not yet known contiguous-done
        self.done: set[int] = set()
        self.next_offset: int | None = None  # one past the highest offset seen
        self.committed: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[Hashable, _Partition] = {}
        self._on_committed: list[Callable[[Mapping[Hashable, int]], None]] = []

    def on_committed(self, listener: Callable[[Mapping[Hashable, int]], None]) -> None:
        """Called with every set of offsets committed (from the thread that learnt of the commit)."""
        self._on_committed.append(listener)

    def add(self, tp: Hashable, offset: int) -> None:
        with self._lock:
            part = self._parts.setdefault(tp, _Partition())
            part.order.append(offset)
            part.next_offset = offset + 1 if part.next_offset is None else max(part.next_offset, offset + 1)

    def done(self, tp: Hashable, offset: int) -> None:
        with self._lock:
            part = self._parts.get(tp)
            if part is None:  # partition revoked meanwhile; the new owner redoes it
                return
            part.done.add(offset)
            while part.order and part.order[0] in part.done:
                part.done.discard(part.order.popleft())

    def in_flight(self, tp: Hashable | None = None) -> int:
        with self._lock:
            parts = (
                [self._parts[tp]]
                if tp is not None and tp in self._parts
                else ([] if tp is not None else self._parts.values())
            )
            return sum(len(part.order) for part in parts)

    def commit_point(self, tp: Hashable) -> int | None:
        with self._lock:
            part = self._parts.get(tp)
            if part is None or part.next_offset is None:
                return None
            return part.order[0] if part.order else part.next_offset

    def to_commit(self) -> dict[Hashable, int]:
        """Commit points that moved since the last mark_committed."""
        out = {}
        with self._lock:
            for tp, part in self._parts.items():
                if part.next_offset is None:
                    continue
                point = part.order[0] if part.order else part.next_offset
                if point != part.committed:
                    out[tp] = point
        return out

    def mark_committed(self, offsets: dict[Hashable, int]) -> None:
        with self._lock:
            for tp, off in offsets.items():
                if tp in self._parts:
                    self._parts[tp].committed = off
        for listener in self._on_committed:
            listener(offsets)

    def remove(self, tps: Iterable[Hashable]) -> None:
        with self._lock:
            for tp in tps:
                self._parts.pop(tp, None)
