"""delivery: exactly_once, shown on Apache Kafka; and why the embedded broker cannot show it.

On Apache Kafka a read_committed reader of the output sees every request answered exactly once: across
SIGKILLs in the middle of transactions, and with a zombie (an instance stopped while its partitions
moved, then resumed). The aborted answers are on the log (a read_uncommitted reader sees them) and
never reach read_committed readers. Tansu commits transactions but shows aborted records to
read_committed readers (the last test), so exactly-once is claimed for Apache Kafka only.
"""

from __future__ import annotations

import random
import signal
from collections import Counter

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError
from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata, TopicPartition

from adae_stream.clients.fixes import keep_pending_join_visible
from adae_stream.codecs import decode_response
from tests.kafka_helpers import collect, create_topic, make_config, produce_requests, read_settled, start_pipeline
from tests.process_helpers import PipelineProcess, Traffic
from tests.waiting import wait_for

ASSIGNED = "partitions assigned"


def read_ids(bootstrap: str, topic: str, isolation: str, expected: set[str], timeout_s: float = 90.0) -> Counter:
    """How often each request id is answered on ``topic`` as a reader with ``isolation`` sees it."""
    seen: Counter = Counter()

    def done(records: list) -> bool:  # decodes each record once: the list only grows
        for r in records[sum(seen.values()) :]:
            seen[decode_response(r.value, r.headers)["id"]] += 1
        return expected <= set(seen)

    done(read_settled(bootstrap, topic, done, isolation, timeout_s))
    return seen


def eos_config(apache_kafka, detector_path, **kafka):
    # commits every 2 s and not when idle: a kill or a stop lands in a transaction holding ~80 sent
    # answers, not between two
    return make_config(
        apache_kafka.bootstrap,
        detector_path,
        delivery="exactly_once",
        kafka={"commit_interval_ms": 2000, "commit_when_idle": False, "session_timeout_ms": 6000, **kafka},
    )


def test_transactions_commit_answers_and_offsets_together(
    apache_kafka, digits_setup, digits_scorer, digits_detector_path
):
    bootstrap = apache_kafka.bootstrap
    cfg = make_config(bootstrap, digits_detector_path, delivery="exactly_once")
    first = produce_requests(bootstrap, cfg.kafka.input_topic, digits_setup["Xte"][:120], "v2", batch=4, prefix="a")
    run = start_pipeline(cfg, digits_scorer)
    assert set(read_ids(bootstrap, cfg.kafka.output_topic, "read_committed", set(first))) == set(first)
    assert run.stop() == 0
    stats = run.pipeline.stats
    assert stats["transactions"] >= 1 and stats["ok"] == len(first)
    # offsets were committed through the transactions (the consumer never committed on its own)
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=cfg.kafka.group_id, enable_auto_commit=False)
    ends: dict = {}  # the input topic's end per partition, from its records
    for r in collect(bootstrap, cfg.kafka.input_topic, len(first), timeout_s=30):
        tp = TopicPartition(r.topic, r.partition)
        ends[tp] = max(ends.get(tp, 0), r.offset + 1)
    assert {tp: c.committed(tp) for tp in ends} == ends
    assert c.end_offsets(list(ends)) == ends  # Apache Kafka's ListOffsets agrees with the records
    c.close()
    # restart: nothing is redone
    second = produce_requests(bootstrap, cfg.kafka.input_topic, digits_setup["Xte"][120:160], "v2", batch=4, prefix="b")
    run = start_pipeline(cfg, digits_scorer)
    seen = read_ids(bootstrap, cfg.kafka.output_topic, "read_committed", set(first) | set(second))
    assert run.stop() == 0
    assert seen == Counter(list(first) + list(second))


def test_sigkills_mid_transaction_leave_each_request_answered_once(
    apache_kafka, digits_setup, digits_detector_path, tmp_path
):
    """Three SIGKILLs while traffic flows. The restart has the same kafka.transactional_id, so it fences
    the killed incarnation and aborts its open transaction at once (InitProducerId)."""
    cfg = eos_config(apache_kafka, digits_detector_path, transactional_id=f"eos-kill-{tmp_path.name}")
    proc = PipelineProcess(cfg, tmp_path, "eos-kill")
    traffic = Traffic(apache_kafka.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"], rate=40)
    rng = random.Random(7)
    kills = 3
    try:
        proc.start()
        assert proc.wait_log(ASSIGNED, timeout_s=120), proc.text()[-3000:]
        traffic.start()
        for _ in range(kills):
            traffic.flow(rng.randint(60, 140), timeout_s=30)
            proc.signal(signal.SIGKILL)
            proc.wait(30)
            proc.start()
            assert proc.wait_log(ASSIGNED, timeout_s=120), proc.text()[-3000:]
        ids = set(traffic.stop())
        committed = read_ids(apache_kafka.bootstrap, cfg.kafka.output_topic, "read_committed", ids, timeout_s=120)
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.text()[-3000:]
    finally:
        traffic.stop()
        proc.cleanup()
    everything = read_ids(apache_kafka.bootstrap, cfg.kafka.output_topic, "read_uncommitted", ids)
    aborted = sum(everything.values()) - sum(committed.values())
    print(f"\n[eos kill] requests={len(ids)} kills={kills} aborted answers on the log={aborted}")
    assert set(committed) == ids
    assert max(committed.values()) == 1, [k for k, n in committed.items() if n > 1][:10]
    # the killed transactions' answers are on the log, and no read_committed reader saw them
    assert aborted > 0


def test_a_zombie_cannot_make_a_duplicate_visible(apache_kafka, digits_setup, digits_detector_path, tmp_path):
    """A is SIGSTOPped with a transaction open; its partitions move to B after the session timeout; A is
    SIGCONTed and tries to commit with the group generation it had: the coordinator refuses (KIP-447) and
    A aborts. Every request is answered once for read_committed readers."""
    cfg = eos_config(apache_kafka, digits_detector_path)
    a, b = PipelineProcess(cfg, tmp_path, "zombie-a"), PipelineProcess(cfg, tmp_path, "zombie-b")
    traffic = Traffic(apache_kafka.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"], rate=40)
    try:
        a.start()
        assert a.wait_log(ASSIGNED, timeout_s=120), a.text()[-3000:]
        traffic.start()
        traffic.flow(80, timeout_s=30)
        a.signal(signal.SIGSTOP)
        b.start()
        assert b.wait_log(ASSIGNED, timeout_s=120), b.text()[-3000:]
        partitions = b.text().split(ASSIGNED, 1)[1].split("\n", 1)[0]
        wait_for(  # B owns every partition once A's session timed out
            lambda: all(f"{cfg.kafka.input_topic}-{p}" in b.text().rsplit(ASSIGNED, 1)[1] for p in range(3)),
            60,
            f"B owning all partitions (first assignment: {partitions})",
        )
        traffic.flow(80, timeout_s=30)  # answered by B while A is stopped
        a.signal(signal.SIGCONT)
        assert a.wait_log("transaction aborted", timeout_s=60) or a.proc.poll() is not None, a.text()[-3000:]
        traffic.flow(80, timeout_s=30)  # after A resumed
        ids = set(traffic.stop())
        committed = read_ids(apache_kafka.bootstrap, cfg.kafka.output_topic, "read_committed", ids, timeout_s=120)
        for p in (a, b):
            p.signal(signal.SIGTERM)
        codes = [p.wait(60) for p in (a, b)]
    finally:
        traffic.stop()
        a.signal(signal.SIGCONT)
        for p in (a, b):
            p.cleanup()
    everything = read_ids(apache_kafka.bootstrap, cfg.kafka.output_topic, "read_uncommitted", ids)
    print(f"\n[zombie] requests={len(ids)} aborted answers on the log={sum(everything.values()) - len(ids)}")
    assert set(committed) == ids
    dup = [k for k, n in committed.items() if n > 1]
    if dup:  # where the duplicates are, for the logs of A and B: each answer's and its request's coordinates
        where = [
            (decode_response(r.value, r.headers)["id"], r.partition, r.offset, r.timestamp)
            for r in read_settled(apache_kafka.bootstrap, cfg.kafka.output_topic, bool, "read_committed", 30)
        ]
        asked = {
            r.key.decode(): (r.partition, r.offset)
            for r in read_settled(apache_kafka.bootstrap, cfg.kafka.input_topic, bool, "read_committed", 30)
        }
        raise AssertionError(len(dup), [(*w, asked.get(w[0])) for w in where if w[0] in set(dup[:5])])
    # The zombie either finds its commit refused (KIP-447), aborts and rejoins (exit 0), or, when its
    # requests timed out while it was stopped, stops with one line and exit 1 for its supervisor to
    # restart; both were seen. The survivor is untouched.
    stops = [line for line in a.text().splitlines() if "pipeline stopped" in line]
    assert (codes[0], len(stops)) in ((0, 0), (1, 1)) and codes[1] == 0, (
        codes,
        stops,
    )  # the zombie rejoined instead of dying


def test_apache_kafka_takes_a_transactional_offset_commit_that_names_no_generation(apache_kafka):
    """Why TransactionalCommitter refuses to commit without a group generation (kafka-python clears it as
    soon as a heartbeat learns we were evicted): while the group has a live member, the coordinator
    refuses a stale generation (KIP-447) but takes a commit that names none, unchecked. If Apache Kafka
    starts refusing the latter, this test fails: the guard then only duplicates the broker's check."""
    bootstrap, topic, group = apache_kafka.bootstrap, "txn-no-generation", "txn-no-generation-group"
    tp = TopicPartition(topic, 0)
    create_topic(bootstrap, topic, partitions=1)
    member = KafkaConsumer(  # read_committed: its offset reads wait until a transaction's markers are written
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, isolation_level="read_committed"
    )
    keep_pending_join_visible(member)  # the join on a topic just made is the race client_fixes closes
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="txn-no-generation")
    try:

        def joined() -> bool:
            member.poll(100)  # the join happens inside poll()
            return member.assignment() == {tp}

        wait_for(joined, 60, "the member's join")
        live = member.group_metadata()
        assert live.generation_id >= 1 and live.member_id
        p.init_transactions()
        p.begin_transaction()
        p.send(topic, b"answer")
        with pytest.raises(CommitFailedError):
            p.send_offsets_to_transaction(
                {tp: OffsetAndMetadata(1, "", -1)}, live._replace(generation_id=live.generation_id + 1)
            )
        p.abort_transaction()
        p.begin_transaction()
        p.send(topic, b"answer")
        p.send_offsets_to_transaction({tp: OffsetAndMetadata(1, "", -1)}, ConsumerGroupMetadata(group_id=group))
        p.commit_transaction()
        assert member.committed(tp) == 1  # taken while the live member owns the partition
    finally:
        p.close()
        member.close()


def test_embedded_broker_shows_aborted_records_to_read_committed_readers(broker):
    """Evidence for the README: Tansu commits transactions, but does not hide aborted ones.

    This is why at_least_once stays the default, and why exactly_once needs Apache Kafka to be exact.
    If Tansu starts hiding aborted records, this test fails: then update the README.
    """
    topic = "txn-evidence"
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="evidence", enable_idempotence=True)
    p.init_transactions()
    p.begin_transaction()
    p.send(topic, b"committed")
    p.commit_transaction()
    p.begin_transaction()
    p.send(topic, b"aborted")
    p.flush()
    p.abort_transaction()
    p.close()
    c = KafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", isolation_level="read_committed"
    )
    values: list[bytes] = []
    try:
        wait_for(
            lambda: values.extend(r.value for rs in c.poll(200).values() for r in rs) or len(values) >= 2, 10, "both"
        )
    finally:
        c.close()
    assert b"committed" in values
    assert b"aborted" in values  # a correct broker would hide this one
