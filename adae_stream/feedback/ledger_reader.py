"""Reads the evidence ledger (``kafka.evidence_topic``) into Totals, from where the totals were saved.

read_committed: evidence of an aborted transaction (a label redone after a crash) is never counted, so
under exactly_once each label counts once whichever replica consumed it and however often it restarted.
"""

from __future__ import annotations

import logging

from adae_stream.clients import Consumer, ConsumerRecord, TopicPartition
from adae_stream.clients.build import plain_reader
from adae_stream.config import Config
from adae_stream.feedback.ledger import Totals, decode_evidence
from adae_stream.feedback.tail import TopicTail

log = logging.getLogger(__name__)


class LedgerReader:
    def __init__(self, cfg: Config, bootstrap: str, consumer: Consumer | None = None) -> None:
        """consumer: the reader to use (a stand-in in the fast tests); by default a read_committed one."""
        if cfg.kafka.evidence_topic is None:
            raise ValueError("config key 'kafka.feedback_topic': decisions need labels (and their evidence topic)")
        self.topic = cfg.kafka.evidence_topic
        if consumer is None:
            consumer = plain_reader(
                cfg.kafka, bootstrap, client_id=f"{cfg.kafka.client_id}-decide", isolation_level="read_committed"
            )
        self._totals = Totals()  # the totals new partitions start from (read())
        self._tail = TopicTail(consumer, [self.topic], self._place)
        self._unseen_logged = False

    def _place(self, consumer: Consumer, new: set[TopicPartition]) -> None:
        """A partition new to this reader starts where the totals stopped (or at its start)."""
        for tp in new:
            if tp.partition in self._totals.offsets:
                consumer.seek(tp, self._totals.offsets[tp.partition])
            else:
                consumer.seek_to_beginning(tp)

    def read(self, totals: Totals, timeout_s: float = 10.0) -> int:
        """Everything committed to the ledger now, added to ``totals`` (whose offsets move with it). Returns
        the records read; a record that is not evidence is counted in totals.skipped."""
        self._totals = totals

        def take(rec: ConsumerRecord) -> None:
            try:
                totals.add(decode_evidence(rec.value))
            except ValueError as exc:
                totals.skipped += 1
                log.warning("ledger record %s-%d@%d skipped: %s", rec.topic, rec.partition, rec.offset, exc)

        read = self._tail.read_to_end(take, timeout_s)
        if not self._tail.partitions:  # the broker shows no topic without READ or DESCRIBE on it, as if absent
            if not self._unseen_logged:
                log.warning(
                    "the evidence topic %s is not visible (not created yet, or no READ ACL for this principal: "
                    "`adae-stream acls --decide`); nothing to decide from until it is",
                    self.topic,
                )
                self._unseen_logged = True
            return 0
        self._unseen_logged = False
        for tp in self._tail.partitions:
            position = self._tail.position(tp)
            if position >= 0:  # -1: not known now (kept where it was; read again next time)
                totals.offsets[tp.partition] = position
        return read

    def skip_to_end(self, totals: Totals) -> None:
        """Count nothing written so far (the demo judges its own run only)."""
        self._totals = totals
        for tp in self._tail.refresh(force=True):
            self._tail.consumer.seek_to_end(tp)
            totals.offsets[tp.partition] = self._tail.position(tp)

    def close(self) -> None:
        self._tail.close()
