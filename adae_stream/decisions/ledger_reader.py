"""Reads the evidence ledger (``kafka.evidence_topic``) into Totals, from where the totals were saved.

read_committed: evidence of an aborted transaction (a label redone after a crash) is never counted, so
under exactly_once each label counts once whichever replica consumed it and however often it restarted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from adae_stream.clients import TopicPartition
from adae_stream.clients.build import plain_reader
from adae_stream.config import Config
from adae_stream.decisions.ledger import Totals, decode_evidence

log = logging.getLogger(__name__)


class LedgerReader:
    def __init__(self, cfg: Config, bootstrap: str) -> None:
        if cfg.kafka.evidence_topic is None:
            raise ValueError("config key 'kafka.feedback_topic': decisions need labels (and their evidence topic)")
        self.topic = cfg.kafka.evidence_topic
        self._consumer: Any = plain_reader(
            cfg.kafka, bootstrap, client_id=f"{cfg.kafka.client_id}-decide", isolation_level="read_committed"
        )
        self._assigned: set[TopicPartition] = set()
        self._unseen_logged = False

    def read(self, totals: Totals, timeout_s: float = 10.0) -> int:
        """Everything committed to the ledger up to its end now, added to ``totals`` (whose offsets move
        with it). Returns the records read; a record that is not evidence is counted in totals.skipped."""
        consumer = self._consumer
        partitions = self._assign(totals)
        if not partitions:  # the broker shows no topic without READ or DESCRIBE on it, as if absent
            if not self._unseen_logged:
                log.warning(
                    "the evidence topic %s is not visible (not created yet, or no READ ACL for this principal: "
                    "`adae-stream acls --decide`); nothing to decide from until it is",
                    self.topic,
                )
                self._unseen_logged = True
            return 0
        self._unseen_logged = False
        ends = consumer.end_offsets(sorted(partitions))  # read_committed: the last stable offset
        read, deadline = 0, time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in partitions) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for rec in records:
                    try:
                        totals.add(decode_evidence(rec.value))
                    except ValueError as exc:
                        totals.skipped += 1
                        log.warning("ledger record %s-%d@%d skipped: %s", rec.topic, rec.partition, rec.offset, exc)
                    read += 1
        for tp in partitions:
            totals.offsets[tp.partition] = consumer.position(tp)
        return read

    def skip_to_end(self, totals: Totals) -> None:
        """Count nothing written so far (the demo judges its own run only)."""
        for tp in self._assign(totals):
            self._consumer.seek_to_end(tp)
            totals.offsets[tp.partition] = self._consumer.position(tp)

    def _assign(self, totals: Totals) -> set[TopicPartition]:
        """Every partition of the ledger, a new one read from where the totals stopped (or its start)."""
        consumer = self._consumer
        partitions = {TopicPartition(self.topic, p) for p in consumer.partitions_for_topic(self.topic) or ()}
        if partitions != self._assigned:
            consumer.assign(sorted(partitions))
            for tp in partitions - self._assigned:
                if tp.partition in totals.offsets:
                    consumer.seek(tp, totals.offsets[tp.partition])
                else:
                    consumer.seek_to_beginning(tp)
            self._assigned = partitions
        return partitions

    def close(self) -> None:
        self._consumer.close()
