"""The join's decisions on labels whose records are not committed yet, scoped to the checkpoint that holds
them, as Quix Streams scopes state to its checkpoint.

A decided label changes two things: the instances it labels are marked on their answer (so another label for
them is a duplicate), and its outcome is counted (the feedback and evidence series). Both belong to the
transaction (under at_least_once, the offset commit) that consumes the label record: they take effect when
its offset is committed, and are undone when the work is redone from an earlier offset (an aborted
transaction, a producer replaced after a rejection, partitions revoked or lost).

Why: with the marks set when a label was read, an aborted transaction's redo read the label again, found its
instances marked, called it a duplicate and wrote no evidence. On Apache Kafka 4.1.1 (exactly_once, 600
labels) 162 and 193 of 600 labels reached the ledger with one answer in ten rejected by the broker, and
563 and 560 after one eviction; the replica's counters said 600 (issue 38).

Committed offsets cover every decision they need to: the join decides the labels of a partition in offset
order (join.py), and a transaction commits only after every record it sent is acked, so each label whose
evidence is in a committed transaction is below that transaction's offsets. Commits arrive from the loop
thread and, under at_least_once, from the consumer's I/O thread: the entries sit behind a lock. Marks are
only ever undone by the loop thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import numpy as np

from adae_stream.feedback.outcome import Outcome

Partition = tuple[str, int]  # (topic, partition); kafka's TopicPartition is such a tuple


@dataclass
class _Entry:
    offset: int
    outcome: Outcome
    marks: np.ndarray | None  # the answer's ``labelled`` array, shared with the answer
    new: np.ndarray | None  # the instances this label marked in it


class LabelJournal:
    def __init__(self, count: Callable[[Outcome], None]) -> None:
        """count: where a committed outcome is reported (the metrics), once per label record."""
        self._count = count
        self._lock = threading.Lock()
        self._open: dict[Partition, list[_Entry]] = {}

    def record(
        self,
        where: tuple[str, int, int],
        outcome: Outcome,
        marks: np.ndarray | None = None,
        new: np.ndarray | None = None,
    ) -> None:
        """A label record decided (``where``: topic, partition, offset), with the marks it set if any."""
        topic, partition, offset = where
        with self._lock:
            self._open.setdefault((topic, partition), []).append(_Entry(offset, outcome, marks, new))

    def commit(self, offsets: Mapping[Hashable, int]) -> None:
        """Committed offsets (the next offset to read, per partition): every decision below them is final
        and counted."""
        final: list[Outcome] = []
        with self._lock:
            for tp, upto in offsets.items():
                entries = self._open.get(tuple(tp))  # type: ignore[arg-type]  # a TopicPartition
                if not entries:
                    continue
                final += [e.outcome for e in entries if e.offset < upto]
                entries[:] = [e for e in entries if e.offset >= upto]
        for outcome in final:
            self._count(outcome)

    def roll_back(self, topic: str, partition: int) -> int:
        """The partition's work is redone from its committed offset (or by its next owner): its decisions
        not committed are undone, latest first. Returns how many."""
        with self._lock:
            entries = self._open.pop((topic, partition), [])
        for entry in reversed(entries):
            if entry.marks is not None and entry.new is not None:
                entry.marks[entry.new] = False
        return len(entries)

    @property
    def uncommitted(self) -> int:
        with self._lock:
            return sum(len(entries) for entries in self._open.values())
