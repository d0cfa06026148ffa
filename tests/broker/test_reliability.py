"""Faults against the real broker with the pipeline as a real process: nothing lost, duplicates bounded.

Each test prints the figures it saw (kills, duplicates, recovery times): run with -s to read them.
"""

from __future__ import annotations

import random
import re
import signal
import time
from collections import defaultdict

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from adae_stream.codecs import decode_response
from adae_stream.stream.broker import EmbeddedBroker, free_port
from tests.kafka_helpers import make_config, producer
from tests.process_helpers import PipelineProcess, Traffic
from tests.waiting import wait_for

ASSIGNED = "partitions assigned"


def answers_by_id(
    bootstrap: str, topic: str, expected_ids: set[str], timeout_s: float = 120.0
) -> dict[str, list[bytes]]:
    """Read the output topic until every expected id has an answer (or timeout); id -> list of bodies."""
    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    got: dict[str, list[bytes]] = defaultdict(list)
    deadline = time.monotonic() + timeout_s
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200).values():
                for r in recs:
                    got[decode_response(r.value, r.headers)["id"]].append(r.value)
            if expected_ids <= set(got):
                quiet_until = quiet_until or time.monotonic() + 2.0  # pick up late duplicates too
                if time.monotonic() > quiet_until:
                    break
    finally:
        c.close()
    return got


def answer_all_then_stop(proc: PipelineProcess, bootstrap: str, topic: str, ids: list[str]) -> dict[str, list[bytes]]:
    """(Re)start the process, read until every id is answered, SIGTERM it and require a clean exit."""
    proc.start()
    assert proc.wait_log(ASSIGNED, timeout_s=90), proc.text()[-3000:]
    got = answers_by_id(bootstrap, topic, set(ids))
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    return got


def test_sigkill_crashes_lose_nothing(apache_kafka, digits_setup, digits_detector_path, tmp_path):
    """5 SIGKILLs at random points while traffic flows; every request answered, duplicates bounded."""
    max_poll = 50
    # one bucket size: a redelivered request scores bit-identically whatever batch it lands in
    cfg = make_config(
        apache_kafka.bootstrap,
        digits_detector_path,
        kafka={"max_poll_records": max_poll},
        batching={"max_batch_size": 64, "bucket_sizes": [64]},
    )
    rng = random.Random(7)
    proc = PipelineProcess(cfg, tmp_path, "crash")
    traffic = Traffic(apache_kafka.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"], rate=25)
    traffic.start()
    recovery = []
    try:
        for _ in range(5):
            t0 = time.monotonic()
            proc.start()
            assert proc.wait_log(ASSIGNED, timeout_s=90), proc.text()[-3000:]
            recovery.append(time.monotonic() - t0)
            traffic.flow(rng.randint(12, 75))  # 0.5-3 s of traffic at 25 requests/s
            proc.signal(signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
        ids = traffic.stop()
        got = answer_all_then_stop(proc, apache_kafka.bootstrap, cfg.kafka.output_topic, ids)
    finally:
        traffic.stop()
        proc.cleanup()
    missing = set(ids) - set(got)
    duplicates = sum(len(v) - 1 for v in got.values())
    print(
        f"\n[crash] requests={len(ids)} kills=5 missing={len(missing)} duplicates={duplicates} "
        f"restart-to-assignment s={[round(r, 1) for r in recovery]}"
    )  # the final restart is in answer_all_then_stop
    assert not missing
    assert all(len(set(bodies)) == 1 for bodies in got.values()), "answers for one id differ"
    assert duplicates <= 5 * max_poll * cfg.kafka.partitions  # at most what one process can have in flight per kill


def test_scale_out_three_on_six_partitions_kill_one_then_it_rejoins(
    apache_kafka, digits_setup, digits_detector_path, tmp_path
):
    """Three replicas share six partitions; one is SIGKILLed (its partitions move after the session
    timeout), then comes back (a graceful rebalance: revoked work is drained and committed first)."""
    cfg = make_config(apache_kafka.bootstrap, digits_detector_path, kafka={"partitions": 6})
    a, b, c = (PipelineProcess(cfg, tmp_path, n) for n in ("a", "b", "c"))
    traffic = Traffic(apache_kafka.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"], rate=20)
    try:
        for p in (a, b, c):
            p.start()
        assert all(p.wait_log(ASSIGNED, timeout_s=120) for p in (a, b, c))
        traffic.start()
        wait_for(lambda: len(traffic.ids) >= 60, 30, "traffic flowing")
        before = {p.name: p.text().count(ASSIGNED) for p in (a, b)}
        c.signal(signal.SIGKILL)
        t_kill = time.monotonic()
        c.wait(30)
        assert all(p.wait_log(ASSIGNED, count=before[p.name] + 1, timeout_s=60) for p in (a, b)), "no takeover"
        takeover_s = time.monotonic() - t_kill
        t_join = time.monotonic()
        after_rejoin_first = len(traffic.ids)
        c.start()
        assert c.wait_log(ASSIGNED, timeout_s=120)
        join_s = time.monotonic() - t_join
        wait_for(lambda: len(traffic.ids) >= after_rejoin_first + 60, 30, "traffic after the rejoin")
        ids = traffic.stop()
        got = answers_by_id(apache_kafka.bootstrap, cfg.kafka.output_topic, set(ids))
        for p in (a, b, c):
            p.signal(signal.SIGTERM)
        assert all(p.wait(60) == 0 for p in (a, b, c))
    finally:
        traffic.stop()
        for p in (a, b, c):
            p.cleanup()
    missing = set(ids) - set(got)
    dup_ids = {k for k, v in got.items() if len(v) > 1}
    print(
        f"\n[scale-out] requests={len(ids)} missing={len(missing)} duplicated ids={len(dup_ids)} "
        f"takeover s={takeover_s:.1f} rejoin s={join_s:.1f}"
    )
    assert not missing
    # the graceful rebalance when the killed one rejoins duplicates nothing
    assert not (dup_ids & set(ids[after_rejoin_first:]))
    rejoined = c.text().split(ASSIGNED, 1)[1].split("\n", 1)[0]
    assert cfg.kafka.input_topic in rejoined  # the rejoined replica really got partitions


def test_sigterm_drains_commits_and_restart_has_no_duplicates(
    apache_kafka, digits_setup, digits_detector_path, tmp_path
):
    cfg = make_config(apache_kafka.bootstrap, digits_detector_path)
    proc = PipelineProcess(cfg, tmp_path, "term")
    traffic = Traffic(apache_kafka.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"], rate=40)
    try:
        proc.start()
        assert proc.wait_log(ASSIGNED, timeout_s=90)
        traffic.start()
        traffic.flow(200)
        t0 = time.monotonic()
        proc.signal(signal.SIGTERM)
        rc = proc.wait(30)
        stop_s = time.monotonic() - t0
        assert rc == 0, proc.text()[-2000:]
        assert "received SIGTERM" in proc.text()
        traffic.flow(40)  # sent while nobody reads: the restart answers them
        ids = traffic.stop()
        got = answer_all_then_stop(proc, apache_kafka.bootstrap, cfg.kafka.output_topic, ids)
    finally:
        traffic.stop()
        proc.cleanup()
    duplicates = sum(len(v) - 1 for v in got.values())
    print(f"\n[sigterm] requests={len(ids)} stop took {stop_s:.2f}s duplicates={duplicates}")
    assert set(got) == set(ids)
    assert duplicates == 0


def test_broker_down_at_start_gives_up_cleanly(digits_detector_path, tmp_path):
    cfg = make_config(f"127.0.0.1:{free_port()}", digits_detector_path, kafka={"connect_timeout_s": 12})
    proc = PipelineProcess(cfg, tmp_path, "nobroker").start()
    try:
        assert proc.wait_log("not reachable", timeout_s=60)
        cpu0, t0 = proc.cpu_seconds(), time.monotonic()
        time.sleep(3)  # the window the CPU share is measured over, not a wait for something
        cpu_share = (proc.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        rc = proc.wait(60)
    finally:
        proc.cleanup()
    text = proc.text()
    print(f"\n[broker down at start] retry CPU share {cpu_share:.3f}, exit code {rc}")
    assert rc != 0
    assert "unreachable for 12s" in text and "kafka.connect_timeout_s" in text
    assert text.count("retrying in") >= 2  # backoff retries, logged
    assert cpu_share < 0.3  # backing off, not spinning


def test_broker_arrives_late_and_pipeline_resumes(digits_setup, digits_detector_path, tmp_path):
    port = free_port()
    cfg = make_config(f"127.0.0.1:{port}", digits_detector_path, kafka={"connect_timeout_s": 120})
    proc = PipelineProcess(cfg, tmp_path, "late").start()
    broker = None
    try:
        assert proc.wait_log("not reachable", timeout_s=60)
        assert proc.wait_log("retrying in", count=2, timeout_s=60)  # it has been waiting a while
        broker = EmbeddedBroker(port=port).start()
        t0 = time.monotonic()
        assert proc.wait_log(ASSIGNED, timeout_s=90), proc.text()[-2000:]
        resume_s = time.monotonic() - t0
        traffic = Traffic(broker.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"], rate=20)
        traffic.start()
        traffic.flow(40)
        ids = traffic.stop()
        got = answers_by_id(broker.bootstrap, cfg.kafka.output_topic, set(ids), timeout_s=60)
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.cleanup()
        broker and broker.stop()
    print(f"\n[broker late] resumed {resume_s:.1f}s after the broker came up")
    assert set(got) == set(ids)


def test_broker_lost_mid_run_then_back(digits_setup, digits_detector_path, tmp_path):
    """The broker dies mid-run: kafka_up drops to 0, no spinning, nothing uncommitted is lost.

    Tansu is memory-only, so it comes back empty: the idempotent producer's sequence state is gone and
    the broker rejects the next answer (OutOfOrderSequenceNumber). The pipeline then stops with exit 1
    and a clear error, committing nothing it did not publish; restarted (as a supervisor would), it
    answers everything. Against Apache Kafka, which keeps that state, the producer resumes in place.
    """
    import urllib.request

    port, metrics_port = free_port(), free_port()
    broker = EmbeddedBroker(port=port).start()
    cfg = make_config(broker.bootstrap, digits_detector_path, metrics={"enabled": True, "port": metrics_port})
    proc = PipelineProcess(cfg, tmp_path, "lost").start()

    def kafka_up() -> str:
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        return next(line for line in body.splitlines() if line.startswith("adae_kafka_up ")).split()[1]

    try:
        assert proc.wait_log(ASSIGNED, timeout_s=90)
        first = Traffic(broker.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"], rate=20, prefix="before")
        first.start()
        first.flow(40)
        ids1 = first.stop()
        assert set(answers_by_id(broker.bootstrap, cfg.kafka.output_topic, set(ids1), timeout_s=60)) == set(ids1)
        broker.stop()
        wait_for(lambda: kafka_up() == "0.0", 60, "adae_kafka_up dropping to 0")
        cpu0, t0 = proc.cpu_seconds(), time.monotonic()
        time.sleep(3)  # the window the CPU share is measured over, not a wait for something
        cpu_share = (proc.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        assert kafka_up() == "0.0"
        assert proc.proc.poll() is None  # still alive, retrying
        broker = EmbeddedBroker(port=port).start()  # memory-only: comes back empty, topics re-created
        t_back = time.monotonic()
        wait_for(lambda: kafka_up() == "1.0", 60, "adae_kafka_up back to 1")
        reconnect_s = time.monotonic() - t_back
        second = Traffic(broker.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"], rate=20, prefix="after")
        second.start()
        second.flow(60)
        ids2 = second.stop()
        rc1 = proc.wait(90)
        text1 = proc.text()
        proc.start()  # what a supervisor (k8s, systemd, compose restart policy) does
        got = answers_by_id(broker.bootstrap, cfg.kafka.output_topic, set(ids2), timeout_s=90)
        proc.signal(signal.SIGTERM)
        rc2 = proc.wait(60)
    finally:
        proc.cleanup()
        broker.stop()
    print(
        f"\n[broker lost] CPU share while down {cpu_share:.3f}; kafka_up back after {reconnect_s:.1f}s; "
        f"first process exit {rc1}; answered after restart {len(set(got) & set(ids2))}/{len(ids2)}"
    )
    assert cpu_share < 0.3
    assert rc1 == 1
    # the first send the dead broker fails is named: an answer, or the batch's summary sent beside it
    assert len(re.findall(r"pipeline stopped: publishing the (answer to the request at|copy to)", text1)) == 1
    assert "its offset is not committed" in text1
    assert set(ids2) <= set(got)
    assert rc2 == 0


@pytest.mark.parametrize("unusable", ["output_topic", "dead_letter_topic"])
def test_publish_failure_commits_nothing(apache_kafka, digits_setup, digits_detector_path, tmp_path, unusable):
    """A topic the service cannot write to is a failure of the whole service, not of a record: one clear
    line, exit 1, and no offset committed for the records it could not publish."""
    from adae_stream.clients.build import ensure_topics
    from tests.kafka_helpers import produce_requests

    cfg = make_config(
        apache_kafka.bootstrap,
        digits_detector_path,
        # the summaries (else named after the output topic) go to a topic that works: one unusable topic
        kafka={unusable: "bad topic name!", "create_topics": False, "summary_topic": f"sum-{tmp_path.name[-12:]}"},
    )
    writable = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={unusable: cfg.kafka.input_topic})})
    ensure_topics(writable, apache_kafka.bootstrap)
    if unusable == "output_topic":
        sent = produce_requests(apache_kafka.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"][:40], "v2", batch=4)
        what = "publishing the answer to the request at"
    else:
        p = producer(apache_kafka.bootstrap)
        sent = {
            f"junk-{i}": p.send(cfg.kafka.input_topic, value=b"not a request", key=f"junk-{i}".encode())
            for i in range(10)
        }
        p.flush()
        p.close()
        what = "publishing the dead-letter record for"
    proc = PipelineProcess(cfg, tmp_path, "badout").start()
    try:
        rc = proc.wait(120)
    finally:
        proc.cleanup()
    text = proc.text()
    assert rc == 1, text[-2000:]
    assert text.count("pipeline stopped: ") == 1 and what in text and "its offset is not committed" in text
    c = KafkaConsumer(bootstrap_servers=apache_kafka.bootstrap, group_id=cfg.kafka.group_id, enable_auto_commit=False)
    committed = {p: c.committed(TopicPartition(cfg.kafka.input_topic, p)) for p in range(cfg.kafka.partitions)}
    c.close()
    assert all(v in (None, 0) for v in committed.values()), committed
    assert len(sent) == 10
