"""The one owner of partition state: which partitions are ours, which are positioned, what each holds.

Everything the service keeps per partition lives behind this object: the assigned set, the partitions
not yet sought to their committed offset, the offsets waiting for acks (OffsetTracker), and the requests
batched in the detector lanes. Forgetting a partition forgets all of it in one place, so a revoked or
lost partition can never leave work behind that would be answered or committed by the wrong owner.

It takes a consumer per call rather than holding one, so tests drive it with a stand-in and no Pipeline.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable

from adae_stream.clients import Consumer, KafkaError, TopicPartition
from adae_stream.stream.lanes import Lanes
from adae_stream.stream.offsets import OffsetTracker

log = logging.getLogger(__name__)


class Assignments:
    def __init__(
        self,
        tracker: OffsetTracker,
        lanes: Lanes,
        auto_offset_reset: str,
        read_timeout_s: float,
        on_forget: Callable[[TopicPartition], None] = lambda tp: None,
    ) -> None:
        self.tracker = tracker
        self.lanes = lanes
        self.auto_offset_reset = auto_offset_reset
        self.read_timeout_s = read_timeout_s
        self.on_forget = on_forget  # e.g. drop the partition's lag series
        # from the rebalance listener (kafka-python calls it inside poll(), on the loop's own thread)
        self.incoming: queue.SimpleQueue[set[TopicPartition]] = queue.SimpleQueue()
        self.assigned: set[TopicPartition] = set()
        self.unpositioned: set[TopicPartition] = set()  # assigned, not yet sought to the committed offset

    @property
    def positioned(self) -> set[TopicPartition]:
        return self.assigned - self.unpositioned

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop everything held for these partitions: their new owner (or our own re-seek) redoes it."""
        self.tracker.remove(partitions)
        for lane in self.lanes:
            for req in lane.batcher.discard_partitions(partitions):
                lane.assembler.discard(req)
            lane.assembler.discard_partitions(partitions)
            lane.shadow_parts.discard_partitions(partitions)
        self.assigned -= partitions
        self.unpositioned -= partitions
        for tp in partitions:
            self.on_forget(tp)

    def forget_all(self) -> None:
        """The group moved on without us (a zombie's refused commit): nothing is ours until the rejoin
        assigns it again; the assignment then positions it from the committed offsets."""
        self.forget(set(self.assigned))

    def redo(self) -> None:
        """Everything we hold is redone from its committed offset (the work sent since was discarded: an
        aborted transaction, a replaced producer): forgotten, then queued to be positioned again."""
        kept = set(self.assigned)
        self.forget(kept)
        self.incoming.put(kept)

    def position(self, consumer: Consumer) -> set[TopicPartition]:
        """Seek newly assigned partitions to their committed offset (or the reset policy when none).

        Returns the partitions whose records in this poll must be skipped: the ones sought now (their
        records come again from the new position) and the ones not yet sought. A partition whose
        committed offset could not be read stays paused and unsought, and is tried again next turn, so
        a failed read can never skip records.

        kafka-python keeps its in-memory fetch position for partitions that stay assigned across a
        rebalance; if the broker's log was truncated or re-created meanwhile, that position would skip
        records. Seeking to the committed offset is the at-least-once contract, whatever happened.
        """
        while True:
            try:
                assigned = self.incoming.get_nowait()
            except queue.Empty:
                break
            self.tracker.remove(assigned)
            self.assigned |= assigned
            self.unpositioned |= assigned
            log.info("partitions assigned: %s", sorted(f"{tp.topic}-{tp.partition}" for tp in assigned))
        skip = set(self.unpositioned)
        for tp in sorted(self.unpositioned):
            try:
                committed = consumer.committed(tp, timeout_ms=int(self.read_timeout_s * 1000))
            except KafkaError as exc:
                log.warning(
                    "could not read the committed offset of %s-%d (%s); partition paused, retrying",
                    tp.topic,
                    tp.partition,
                    exc,
                )
                consumer.pause(tp)
                continue
            log.debug("%s-%d positioned at its committed offset %s", tp.topic, tp.partition, committed)
            if committed is not None:
                consumer.seek(tp, committed)
            elif self.auto_offset_reset == "earliest":
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek_to_end(tp)
            consumer.resume(tp)
            self.unpositioned.discard(tp)
        return skip
