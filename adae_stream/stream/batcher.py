"""Micro-batching: concatenate requests into batches of at most max_batch_size instances, split back.

A request larger than max_batch_size is cut across several batches; the Assembler puts its results back
together and releases it only when every slice has been scored.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from adae_stream.codecs import Request


def _partition_of(request: Request) -> tuple[str, int]:
    """(topic, partition): equal to a kafka TopicPartition, which is a namedtuple of the same fields."""
    return (request.record.topic, request.record.partition)


@dataclass
class Segment:
    request: Request
    start: int  # slice of the request's instances
    stop: int
    offset: int  # where the slice starts in the batch


@dataclass
class Batch:
    x: np.ndarray
    segments: list[Segment]

    @property
    def size(self) -> int:
        return int(self.x.shape[0])


class Batcher:
    def __init__(self, max_batch_size: int, max_delay_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_batch_size = int(max_batch_size)
        self.max_delay_s = float(max_delay_s)
        self.clock = clock
        self._queue: deque[list] = deque()  # [request, next_start]
        self.pending_instances = 0

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, request: Request) -> None:
        self._queue.append([request, 0])
        self.pending_instances += request.n

    def discard(self, request: Request) -> None:
        """Drop what is left of a request (its other slices failed)."""
        for entry in list(self._queue):
            if entry[0] is request:
                self._queue.remove(entry)
                self.pending_instances -= request.n - entry[1]

    def discard_partitions(self, partitions: set) -> list[Request]:
        """Drop the pending requests read from these (topic, partition)s: they were lost or revoked, and
        their new owner redoes them. Returns the dropped requests."""
        dropped = [entry[0] for entry in self._queue if _partition_of(entry[0]) in partitions]
        for req in dropped:
            self.discard(req)
        return dropped

    def time_until_due(self) -> float | None:
        """Seconds until a batch is due (0: now); None when nothing is pending."""
        if not self._queue:
            return None
        if self.pending_instances >= self.max_batch_size:
            return 0.0
        return max(0.0, self._queue[0][0].arrival + self.max_delay_s - self.clock())

    def take(self, force: bool = False) -> Batch | None:
        """The next batch if one is due (or any pending work when force), else None."""
        due = self.time_until_due()
        if due is None or (due > 0 and not force):
            return None
        segments, parts, filled = [], [], 0
        while self._queue and filled < self.max_batch_size:
            entry = self._queue[0]
            req, start = entry
            stop = min(req.n, start + self.max_batch_size - filled)
            segments.append(Segment(req, start, stop, filled))
            parts.append(req.instances[start:stop])
            filled += stop - start
            if stop == req.n:
                self._queue.popleft()
            else:
                entry[1] = stop
        self.pending_instances -= filled
        x = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return Batch(x, segments)


class Assembler:
    """Collects per-request result slices; returns each request once all its instances are scored."""

    def __init__(self) -> None:
        self._partial: dict[int, tuple[Request, list[tuple[int, dict[str, np.ndarray]]], int]] = {}

    def __len__(self) -> int:
        return len(self._partial)

    def discard(self, request: Request) -> None:
        self._partial.pop(id(request), None)

    def discard_partitions(self, partitions: set) -> None:
        for key, (req, _, _) in list(self._partial.items()):
            if _partition_of(req) in partitions:
                del self._partial[key]

    def add(self, batch: Batch, result: dict[str, np.ndarray]) -> list[tuple[Request, dict[str, np.ndarray]]]:
        done = []
        for seg in batch.segments:
            n = seg.stop - seg.start
            piece = {k: v[seg.offset : seg.offset + n] for k, v in result.items()}
            req = seg.request
            if seg.start == 0 and seg.stop == req.n:
                done.append((req, piece))
                continue
            _, pieces, got = self._partial.get(id(req), (req, [], 0))
            pieces.append((seg.start, piece))
            got += n
            if got == req.n:
                del self._partial[id(req)]
                pieces.sort(key=lambda p: p[0])
                done.append((req, {k: np.concatenate([p[1][k] for p in pieces]) for k in result}))
            else:
                self._partial[id(req)] = (req, pieces, got)
        return done
