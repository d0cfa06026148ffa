"""The one reader of topics outside any group: every partition of its topics (partitions added later are found
too), each started where its owner says, read without committing anything.

How far the end is comes from the fetch responses' high watermarks, never from ListOffsets: the embedded
broker (Tansu) answers ListOffsets wrongly (13 committed records reported as 4, 79 as 40), where fetch high
watermarks are right on both brokers. Under read_committed a partition whose tail is an open transaction
cannot be read up to its high watermark until that transaction ends; a read "to the end now" stops there, at
the second fetch that brings nothing, which is as far as anything committed goes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from adae_stream.clients import Consumer, ConsumerRecord, KafkaError, TopicPartition

log = logging.getLogger(__name__)

PARTITION_CHECK_S = 10.0  # how often the topics are looked at again for partitions added
EMPTY_FETCHES_AT_END = 2  # consecutive empty polls that end a read to the end (one may be a slow fetch)


class TopicTail:
    def __init__(
        self,
        consumer: Consumer,
        topics: Iterable[str],
        place: Callable[[Consumer, set[TopicPartition]], None],
        partition_check_s: float = PARTITION_CHECK_S,
    ) -> None:
        """place: positions partitions seen for the first time (seek to a saved offset, a time, the start)."""
        self.consumer = consumer
        self.topics = list(topics)
        self._place = place
        self.partition_check_s = partition_check_s
        self.partitions: set[TopicPartition] = set()
        self._last_check = -float("inf")

    def refresh(self, force: bool = False) -> set[TopicPartition]:
        """Every partition of the topics, new ones assigned and placed (checked every partition_check_s)."""
        if not force and time.monotonic() - self._last_check < self.partition_check_s:
            return self.partitions
        self._last_check = time.monotonic()
        found = {TopicPartition(t, p) for t in self.topics for p in (self.consumer.partitions_for_topic(t) or ())}
        new = found - self.partitions
        if new:
            self.consumer.assign(sorted(found))
            self._place(self.consumer, new)
            self.partitions = found
            log.debug("tail of %s reads %d partitions", ", ".join(self.topics), len(found))
        return self.partitions

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[ConsumerRecord]]:
        """What has arrived (blocks up to timeout_ms for something)."""
        if not self.refresh():
            return {}
        return self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)

    def position(self, tp: TopicPartition) -> int:
        try:
            position = self.consumer.position(tp, timeout_ms=100)
        except KafkaError:
            return -1
        return -1 if position is None else position

    def at_end(self, tp: TopicPartition) -> bool:
        """Read up to the last fetched high watermark (False before any fetch of it came back)."""
        highwater = self.consumer.highwater(tp)
        return highwater is not None and self.position(tp) >= highwater

    def lag(self) -> int:
        """Records not read yet, by the last fetched high watermarks."""
        total = 0
        for tp in self.partitions:
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                total += max(0, highwater - max(0, self.position(tp)))
        return total

    def fetched(self) -> bool:
        """Whether a fetch of every partition has come back (its high watermark is known)."""
        return all(self.consumer.highwater(tp) is not None for tp in self.partitions)

    def read_to_end(self, take: Callable[[ConsumerRecord], None], timeout_s: float, poll_ms: int = 200) -> int:
        """Everything readable now, handed to ``take`` in order per partition: until every partition is at
        its high watermark, or EMPTY_FETCHES_AT_END polls in a row bring nothing (the rest is an open
        transaction's), or timeout_s. Returns the records read."""
        read, empty, deadline = 0, 0, time.monotonic() + timeout_s
        self.refresh(force=True)
        while self.partitions and time.monotonic() < deadline:
            polled = self.consumer.poll(timeout_ms=poll_ms)
            got = 0
            for records in polled.values():
                for rec in records:
                    take(rec)
                got += len(records)
            read += got
            empty = 0 if got else empty + 1
            if self.fetched() and (all(self.at_end(tp) for tp in self.partitions) or empty >= EMPTY_FETCHES_AT_END):
                break
        return read

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception as exc:
            log.warning("closing the reader of %s: %s", ", ".join(self.topics), exc)


class ResumingReader:
    """One topic read to its end on each call, every partition resuming where ``offsets`` (partition -> next
    offset, saved by the owner together with what it made of the records) says; a partition without a saved
    offset starts at its beginning or its end (``fresh``). The offsets move with what was read."""

    def __init__(self, consumer: Consumer, topic: str, fresh: str = "beginning") -> None:
        if fresh not in ("beginning", "end"):
            raise ValueError(f"fresh partitions start at the beginning or the end, not {fresh!r}")
        self.topic, self.fresh = topic, fresh
        self._offsets: dict[int, int] = {}
        self._tail = TopicTail(consumer, [topic], self._place)

    def _place(self, consumer: Consumer, new: set[TopicPartition]) -> None:
        for tp in new:
            if tp.partition in self._offsets:
                consumer.seek(tp, self._offsets[tp.partition])
            elif self.fresh == "beginning":
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek_to_end(tp)

    @property
    def visible(self) -> bool:
        """Whether the topic was seen (the broker shows none without READ or DESCRIBE on it, as if absent)."""
        return bool(self._tail.partitions)

    def read(self, offsets: dict[int, int], take: Callable[[ConsumerRecord], None], timeout_s: float = 10.0) -> int:
        """Everything readable now, in order per partition, handed to ``take``; ``offsets`` updated to where
        it stopped. Returns the records read."""
        self._offsets = offsets
        read = self._tail.read_to_end(take, timeout_s)
        for tp in self._tail.partitions:
            position = self._tail.position(tp)
            if position >= 0:  # -1: not known now (kept where it was; read again next time)
                offsets[tp.partition] = position
        return read

    def skip_to_end(self, offsets: dict[int, int]) -> None:
        """Nothing written so far is read (the demo judges its own run only)."""
        self._offsets = offsets
        for tp in self._tail.refresh(force=True):
            self._tail.consumer.seek_to_end(tp)
            offsets[tp.partition] = self._tail.position(tp)

    def close(self) -> None:
        self._tail.close()
