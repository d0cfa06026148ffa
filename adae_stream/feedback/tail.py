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
