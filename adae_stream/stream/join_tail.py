"""Every replica's view of the whole group's answers: the output topic and the shadow topic, tailed outside
any group into this replica's FeedbackJoin (a global table in Kafka Streams' terms).

Why not a co-partitioned join: labels come from a pipeline that is not ours. A co-partitioned join needs
the labels keyed by request id with the default partitioner and as many feedback partitions as output
partitions, an assignor that co-partitions both topics, and no rebalance between an answer and its label
(measured with three replicas: two thirds of the labels lost otherwise). Re-keying the labels through an
internal repartition topic (Kafka Streams, Quix Streams) would fix the keying, but each replica's join
state would still move with its partitions. Reading every answer in every replica costs each replica
the decoding and the memory of the group's answers in the window (benchmarks/RESULTS.md, "Feedback join
across replicas"), and makes the join independent of keying, partition counts, rebalances and restarts.

When is a label's answer "not there"? The answer was written before the labelling pipeline saw it, so
before the label reached us. A partition has been read far enough for a label that arrived at wall time
``a`` once the tail has read a record of it stamped at or after ``a + feedback.clock_skew_s`` (records of
a partition are appended in order; the margin covers clocks of the writing replicas running ahead of
ours), or, for a quiet partition, once that moment has passed and the tail stands at the partition's
high watermark. ListOffsets is not used: the embedded broker answers it wrongly (README, "Tested
brokers"); fetch high watermarks are right on both brokers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from adae_stream.clients import KafkaError, TopicPartition
from adae_stream.clients.build import plain_reader
from adae_stream.config import Config
from adae_stream.stream.feedback import FeedbackJoin, read_record

log = logging.getLogger(__name__)

MAX_RECORDS_PER_TURN = 2000  # bounds the loop's time per turn while the tail catches up after a start
PARTITION_CHECK_S = 10.0  # how often the topics are looked at again for partitions added


class JoinTail:
    def __init__(self, cfg: Config, bootstrap: str, join: FeedbackJoin, clock: Callable[[], float] = time.time) -> None:
        self.kafka = cfg.kafka
        self.bootstrap = bootstrap
        self.join = join
        self.clock = clock
        self.margin_s = cfg.feedback.clock_skew_s
        self.topics = [t for t in (self.kafka.output_topic, self.kafka.shadow_topic) if t]
        self._consumer: Any = None
        self._latest_ms: dict[TopicPartition, int] = {}  # the newest record timestamp read, per partition
        self._last_partition_check = 0.0
        self._started_at: float | None = None  # until the first catch-up, logged once

    @property
    def started(self) -> bool:
        return self._consumer is not None

    def start(self) -> None:
        """Assign every partition of the topics and seek each to now minus feedback.window_s."""
        consumer = plain_reader(
            self.kafka, self.bootstrap, client_id=f"{self.kafka.client_id}-join", isolation_level="read_committed"
        )
        self._consumer = consumer
        self._started_at = time.monotonic()
        try:
            self._assign_new_partitions()
        except Exception:  # the connect is retried with this; nothing half-started stays
            self._consumer, self._latest_ms = None, {}
            consumer.close()
            raise

    def _assign_new_partitions(self) -> None:
        self._last_partition_check = time.monotonic()
        consumer = self._consumer
        found = {TopicPartition(t, p) for t in self.topics for p in (consumer.partitions_for_topic(t) or ())}
        new = found - set(self._latest_ms)
        if not new:
            return
        consumer.assign(sorted(found))
        since_ms = int((self.clock() - self.join.window_s) * 1000)
        starts = consumer.offsets_for_times({tp: since_ms for tp in new})
        for tp in new:
            self._latest_ms[tp] = -1
            start = starts.get(tp)
            if start is not None:
                consumer.seek(tp, start.offset)
            else:  # nothing at or after since_ms: only what comes next
                consumer.seek_to_end(tp)
        log.info("feedback join reads %d partitions of %s", len(found), ", ".join(self.topics))

    def poll(self) -> int:
        """Read what has arrived (never blocks). Returns the records read."""
        if self._consumer is None:
            return 0
        try:
            if time.monotonic() - self._last_partition_check > PARTITION_CHECK_S:
                self._assign_new_partitions()
            if not self._latest_ms:  # the topics have no partitions yet (not created)
                return 0
            polled = self._consumer.poll(timeout_ms=0, max_records=MAX_RECORDS_PER_TURN)
        except KafkaError as exc:  # the join waits; labels stay pending, nothing is lost
            log.warning("the feedback join could not read %s: %s", ", ".join(self.topics), exc)
            return 0
        n = 0
        for tp, records in polled.items():
            for rec in records:
                read_record(self.join, rec, self.kafka.shadow_topic)
                n += 1
            self._latest_ms[tp] = max(self._latest_ms.get(tp, -1), records[-1].timestamp)
        if self._started_at is not None and self.lag() == 0 and self._all_fetched():
            log.info(
                "feedback join rebuilt from %s: %d answers (%d instances) of the last %.0f s, in %.1f s",
                ", ".join(self.topics),
                len(self.join),
                self.join.instances,
                self.join.window_s,
                time.monotonic() - self._started_at,
            )
            self._started_at = None
        return n

    def _all_fetched(self) -> bool:
        return all(self._consumer.highwater(tp) is not None for tp in self._latest_ms)

    def placed(self, arrival_s: float) -> bool:
        """Whether every answer given before ``arrival_s`` has been read (see the module's docstring)."""
        if self._consumer is None or not self._latest_ms:
            return False
        horizon_ms = (arrival_s + self.margin_s) * 1000.0
        quiet_allowed = self.clock() * 1000.0 >= horizon_ms
        for tp, latest in self._latest_ms.items():
            if latest >= horizon_ms:
                continue
            if not quiet_allowed:
                return False
            highwater = self._consumer.highwater(tp)
            if highwater is None or self._position(tp) < highwater:
                return False
        return True

    def _position(self, tp: TopicPartition) -> int:
        try:
            position = self._consumer.position(tp, timeout_ms=100)
        except KafkaError:
            return -1
        return -1 if position is None else position

    def lag(self) -> int:
        """Records of the topics not read yet (by the last fetched high watermarks)."""
        if self._consumer is None:
            return 0
        total = 0
        for tp in self._latest_ms:
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                total += max(0, highwater - max(0, self._position(tp)))
        return total

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception as exc:
                log.warning("closing the feedback join's reader: %s", exc)
            self._consumer = None
