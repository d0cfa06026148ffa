"""Reads the evidence ledger (``kafka.evidence_topic``) into Totals, from where the totals were saved.

read_committed: evidence of an aborted transaction (a label redone after a crash) is never counted, so
under exactly_once each label counts once whichever replica consumed it and however often it restarted.
"""

from __future__ import annotations

import logging

from adae_stream.clients import Consumer, ConsumerRecord
from adae_stream.clients.build import plain_reader
from adae_stream.config import Config
from adae_stream.feedback.ledger import Totals, decode_evidence
from adae_stream.feedback.tail import ResumingReader

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
        self._reader = ResumingReader(consumer, self.topic, fresh="beginning")
        self._unseen_logged = False

    def read(self, totals: Totals, timeout_s: float = 10.0) -> int:
        """Everything committed to the ledger now, added to ``totals`` (whose offsets move with it). Returns
        the records read; a record that is not evidence is counted in totals.skipped."""

        def take(rec: ConsumerRecord) -> None:
            try:
                totals.add(decode_evidence(rec.value))
            except ValueError as exc:
                totals.skipped += 1
                log.warning("ledger record %s-%d@%d skipped: %s", rec.topic, rec.partition, rec.offset, exc)

        read = self._reader.read(totals.offsets, take, timeout_s)
        if not self._reader.visible:
            if not self._unseen_logged:
                log.warning(
                    "the evidence topic %s is not visible (not created yet, or no READ ACL for this principal: "
                    "`adae-stream acls --decide`); nothing to decide from until it is",
                    self.topic,
                )
                self._unseen_logged = True
            return 0
        self._unseen_logged = False
        return read

    def skip_to_end(self, totals: Totals) -> None:
        """Count nothing written so far (the demo judges its own run only)."""
        self._reader.skip_to_end(totals.offsets)

    def close(self) -> None:
        self._reader.close()
