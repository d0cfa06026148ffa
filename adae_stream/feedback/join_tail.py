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
high watermark (tail.py: fetch high watermarks, never ListOffsets, which the embedded broker answers
wrongly). Where each partition starts, now minus ``feedback.window_s``, is looked up by time
(``offsets_for_times``) once per partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from adae_stream.clients import Clients, Consumer, ConsumerRecord, KafkaError, TopicPartition
from adae_stream.codecs import decode_response
from adae_stream.codecs.records import MODEL_NAME_HEADER, MODEL_VERSION_HEADER
from adae_stream.codecs.tensors import INSTANCE_INDEX
from adae_stream.config import Config
from adae_stream.errors import UnreadableAnswer
from adae_stream.feedback.answers import decode_shadow
from adae_stream.feedback.join import FeedbackJoin
from adae_stream.feedback.tail import TopicTail

log = logging.getLogger(__name__)

WHO_ANSWERED = (MODEL_NAME_HEADER, MODEL_VERSION_HEADER)
MAX_RECORDS_PER_TURN = 2000  # bounds the loop's time per turn while the tail catches up after a start


class JoinTail:
    def __init__(
        self, cfg: Config, clients: Clients, join: FeedbackJoin, clock: Callable[[], float] = time.time
    ) -> None:
        self.kafka = cfg.kafka
        self.clients = clients
        self.join = join
        self.clock = clock
        self.margin_s = cfg.feedback.clock_skew_s
        self.topics = [t for t in (self.kafka.output_topic, self.kafka.shadow_topic) if t]
        self._tail: TopicTail | None = None
        self._latest_ms: dict[TopicPartition, int] = {}  # the newest record timestamp read, per partition
        self._started_at: float | None = None  # until the first catch-up, logged once

    @property
    def started(self) -> bool:
        return self._tail is not None

    def start(self) -> None:
        """Every partition of the topics, each from now minus feedback.window_s."""
        consumer = self.clients.reader(f"{self.kafka.client_id}-join", "read_committed")
        tail = TopicTail(consumer, self.topics, self._place)
        self._started_at = time.monotonic()
        try:
            tail.refresh(force=True)
        except Exception:  # the connect is retried with this; nothing half-started stays
            self._latest_ms = {}
            tail.close()
            raise
        self._tail = tail
        log.info("feedback join reads %d partitions of %s", len(tail.partitions), ", ".join(self.topics))

    def _place(self, consumer: Consumer, new: set[TopicPartition]) -> None:
        since_ms = int((self.clock() - self.join.window_s) * 1000)
        starts = consumer.offsets_for_times({tp: since_ms for tp in new})
        for tp in new:
            self._latest_ms[tp] = -1
            start = starts.get(tp)
            if start is not None:
                consumer.seek(tp, start.offset)
            else:  # nothing at or after since_ms: only what comes next
                consumer.seek_to_end(tp)

    def poll(self) -> int:
        """Read what has arrived (never blocks). Returns the records read."""
        tail = self._tail
        if tail is None:
            return 0
        try:
            polled = tail.poll(timeout_ms=0, max_records=MAX_RECORDS_PER_TURN)
        except KafkaError as exc:  # the join waits; labels stay pending, nothing is lost
            log.warning("the feedback join could not read %s: %s", ", ".join(self.topics), exc)
            return 0
        n = 0
        for tp, records in polled.items():
            for rec in records:
                read_record(self.join, rec, self.kafka.shadow_topic)
                n += 1
            self._latest_ms[tp] = max(self._latest_ms.get(tp, -1), records[-1].timestamp)
        if self._started_at is not None and tail.lag() == 0 and tail.fetched():
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

    def placed(self, arrival_s: float) -> bool:
        """Whether every answer given before ``arrival_s`` has been read (see the module's docstring)."""
        tail = self._tail
        if tail is None or not self._latest_ms:
            return False
        horizon_ms = (arrival_s + self.margin_s) * 1000.0
        quiet_allowed = self.clock() * 1000.0 >= horizon_ms
        for tp, latest in self._latest_ms.items():
            if latest >= horizon_ms:
                continue
            if not quiet_allowed or not tail.at_end(tp):
                return False
        return True

    def lag(self) -> int:
        """Records of the topics not read yet (by the last fetched high watermarks)."""
        return self._tail.lag() if self._tail is not None else 0

    def close(self) -> None:
        if self._tail is not None:
            self._tail.close()
            self._tail = None


def read_record(join: FeedbackJoin, rec: ConsumerRecord, shadow_topic: str | None) -> bool:
    """One record of the output topic (an answer) or of the shadow topic into the join. Returns whether it
    was taken; records that are not answers or shadow records we can read are skipped (the topics may
    hold other writers' records), and so are flagged-only answers (kafka.publish flagged).

    Each answer is decoded as it is read (26-150 µs, benchmarks/RESULTS.md, "Feedback join across
    replicas"). Keeping the records undecoded until a label asks was measured too: 6-48x less time per
    answer, but 3-4x the memory per answer, so feedback.max_instances would hold a far shorter window."""
    if shadow_topic is not None and rec.topic == shadow_topic:
        try:
            request_id, detector, version, fields = decode_shadow(rec.value)
        except (ValueError, KeyError, TypeError):
            return False
        join.remember_shadow(request_id, detector, version, fields)
        return True
    try:
        answer = decode_response(rec.value, rec.headers)
    except UnreadableAnswer:
        return False
    if INSTANCE_INDEX in answer:
        return False
    headers = dict(rec.headers or ())
    name, version = ((headers.get(h) or b"").decode("utf-8", "replace") for h in WHO_ANSWERED)
    join.remember(answer["id"], answer, rec.timestamp / 1000.0, name, version)
    return True
