"""The decision-maker's ledger reader over the client seam's stand-in log: everything committed is read once,
from where the totals stopped, never past an open transaction, and without ListOffsets (which the embedded
broker answers wrongly: 13 committed records reported as 4, 79 as 40, issue 38)."""

from __future__ import annotations

import pytest

from adae_stream.config import load_config
from adae_stream.feedback.evidence import Counts, PairedEvidence
from adae_stream.feedback.ledger import Totals, encode_evidence
from adae_stream.feedback.ledger_reader import LedgerReader
from tests.stand_ins import MemoryBroker, StandInConsumer, StandInProducer

LEDGER = "out-evidence"
CFG = load_config(
    None,
    environ={},
    overrides={"kafka": {"bootstrap_servers": "memory:0", "output_topic": "out", "feedback_topic": "labels"}},
)


class NoListOffsets(StandInConsumer):
    def end_offsets(self, partitions):
        raise AssertionError("the ledger's end came from ListOffsets")


def label(b: int, c: int) -> bytes:
    return encode_evidence([PairedEvidence("defense", "a", "1", "1", Counts(b, c, 1))])


def reader(broker: MemoryBroker) -> LedgerReader:
    return LedgerReader(CFG, "memory:0", NoListOffsets(broker, read_committed=True))


def test_every_committed_record_is_read_once_and_what_is_not_evidence_is_skipped():
    broker = MemoryBroker(partitions=2)
    for i in range(79):  # over both partitions, by key
        broker.produce(LEDGER, label(1, 0), key=f"k{i}".encode())
    broker.produce(LEDGER, b"not evidence", key=b"k0")
    totals = Totals()
    r = reader(broker)
    assert r.read(totals) == 80 and totals.skipped == 1
    assert totals.get("defense", "a", 1, 1) == Counts(79, 0, 79)
    assert sum(totals.offsets.values()) == 80
    assert r.read(totals) == 0  # nothing new: nothing counted twice
    broker.produce(LEDGER, label(0, 1), key=b"k1")
    assert r.read(totals) == 1 and totals.get("defense", "a", 1, 1) == Counts(79, 1, 80)


def test_an_open_transaction_is_not_read_until_it_commits_and_an_aborted_one_never():
    broker = MemoryBroker()
    totals, r = Totals(), reader(broker)
    replica = StandInProducer(broker, transactional=True)
    replica.begin_transaction()
    replica.send(LEDGER, label(5, 0))
    assert r.read(totals, timeout_s=5) == 0 and totals.get("defense", "a", 1, 1) == Counts()
    replica.abort_transaction()
    replica.begin_transaction()
    replica.send(LEDGER, label(0, 7))
    replica.commit_transaction()
    assert r.read(totals, timeout_s=5) == 1 and totals.get("defense", "a", 1, 1) == Counts(0, 7, 1)


def test_a_restart_reads_on_from_the_saved_offsets_and_the_demo_skips_what_came_before():
    broker = MemoryBroker()
    for _ in range(13):
        broker.produce(LEDGER, label(1, 0))
    first = Totals()
    reader(broker).read(first)
    broker.produce(LEDGER, label(0, 1))
    again = Totals.from_json(first.to_json())  # what state.json kept
    assert reader(broker).read(again) == 1 and again.get("defense", "a", 1, 1) == Counts(13, 1, 14)
    fresh = Totals()
    r = reader(broker)
    r.skip_to_end(fresh)
    broker.produce(LEDGER, label(2, 0))
    assert r.read(fresh) == 1 and fresh.get("defense", "a", 1, 1) == Counts(2, 0, 1)


def test_a_ledger_not_there_yet_is_read_as_empty_and_said_once(caplog):
    class NoTopic(NoListOffsets):
        def partitions_for_topic(self, topic):
            return set()

    r = LedgerReader(CFG, "memory:0", NoTopic(MemoryBroker(), read_committed=True))
    assert r.read(Totals()) == 0 and r.read(Totals()) == 0
    assert caplog.text.count("is not visible") == 1


@pytest.mark.parametrize("topic", [None])
def test_a_config_without_labels_has_no_ledger_to_read(topic):
    cfg = load_config(None, environ={}, overrides={"kafka": {"bootstrap_servers": "memory:0"}})
    assert cfg.kafka.evidence_topic is topic
    with pytest.raises(ValueError, match="feedback_topic"):
        LedgerReader(cfg, "memory:0", StandInConsumer(MemoryBroker()))
