"""Every label's evidence on the ledger exactly once through faults, on Apache Kafka with exactly_once: one
real `adae-stream run` process; labels interleaved with answers the broker rejects (one per transaction,
then two in one window), an eviction (the process paused past its session timeout, as in a rebalance), and
a SIGKILL with labels in an open transaction. Each fault is injected and confirmed before the next phase
(a pause or a kill whose labels were committed just before it is injected again, at most three times).

Issue 38 measured, on Apache Kafka 4.1.1 with 600 labels: 162 and 193 of them on the ledger with one
rejected answer per ten labels, 563 and 560 after one eviction; two rejected answers in one window were
rejected 5 and 4 times and killed the process. The fast twin of this test (tests/fast/test_evidence_faults.py)
drives the same faults through the real loop on stand-in clients.

Checked: the ledger read with read_committed holds one record per label, naming its request, with the
counts computed here from the answers and the labels; before the SIGKILL, the process's own counters equal
the ledger's; the process never stops on its own; each rejected request is dead-lettered once.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections import Counter

import numpy as np
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from adae_stream.codecs import decode_response, encode_request
from adae_stream.stream.broker import free_port
from tests.kafka_helpers import create_topic, make_config, producer, read_settled
from tests.platform_helpers import metrics as scrape
from tests.process_helpers import PipelineProcess
from tests.waiting import wait_for

LIMIT = 16 * 1024  # the output topic's limit, lowered while the service runs: a 1,000-instance answer is over it
BIG = 1000  # instances: an answer of ~25 KiB (a 4-instance answer is under 1 KiB)
INPUT_LIMIT = 2 * 1024 * 1024  # a 1,000-instance request is ~0.6 MB of JSON
PAIRS = ("corrected_only", "undefended_only", "concordant")


def records(bootstrap: str, topic: str, isolation: str = "read_committed") -> list:
    """Everything a reader with ``isolation`` sees now (what arrives later is read by the next call)."""
    return read_settled(bootstrap, topic, lambda got: True, isolation, timeout_s=30, quiet_s=0.3)


def lower_limit(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(LIMIT)})]
        )

        def applied() -> bool:
            got = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
            return got["topic"][topic]["max.message.bytes"]["value"] == str(LIMIT)

        wait_for(applied, 30, "the lowered limit")
    finally:
        admin.close()


class Traffic:
    """Requests, their answers, and labels for them, with what each label's evidence must be."""

    def __init__(self, bootstrap: str, cfg, X: np.ndarray, y: np.ndarray) -> None:
        self.bootstrap, self.cfg, self.X, self.y = bootstrap, cfg, X, y
        self.p = producer(bootstrap)
        self.rows: dict[str, np.ndarray] = {}
        self.answers: dict[str, dict] = {}
        self.labelled: list[str] = []
        self.bigs: list[str] = []

    def ask(self, n: int) -> None:
        """n requests of 4 instances, answered (read back) before they are labelled."""
        ids = []
        for _ in range(n):
            rid = f"q{len(self.rows)}"
            rows = (np.arange(4) + 4 * len(self.rows)) % len(self.X)
            payload, headers = encode_request(self.X[rows], "v2", rid)
            self.p.send(self.cfg.kafka.input_topic, value=payload, key=rid.encode(), headers=headers)
            self.rows[rid] = rows
            ids.append(rid)
        self.p.flush()

        def read() -> bool:
            for r in records(self.bootstrap, self.cfg.kafka.output_topic):
                answer = decode_response(r.value, r.headers)
                self.answers.setdefault(answer["id"], answer)
            return set(ids) <= set(self.answers)

        wait_for(read, 120, f"{n} requests answered")

    def label(self, n: int) -> list[str]:
        """The next n answered requests labelled (each once)."""
        ids = [rid for rid in self.answers if rid not in self.labelled][:n]
        assert len(ids) == n, "ask for more requests first"
        for rid in ids:
            body = json.dumps({"id": rid, "labels": self.y[self.rows[rid]].tolist()}).encode()
            self.p.send(self.cfg.kafka.feedback_topic, value=body, key=rid.encode())
        self.p.flush()
        self.labelled += ids
        return ids

    def big(self) -> str:
        rid = f"big{len(self.bigs)}"
        payload, headers = encode_request(np.resize(self.X, (BIG, *self.X.shape[1:])), "v2", rid)
        self.p.send(self.cfg.kafka.input_topic, value=payload, key=rid.encode(), headers=headers).get(30)
        self.bigs.append(rid)
        return rid

    def want(self, ids: list[str]) -> dict[str, int]:
        """The defense's paired counts of these labels, computed from their answers."""
        out = dict.fromkeys(PAIRS, 0)
        for rid in ids:
            a, truth = self.answers[rid], self.y[self.rows[rid]]
            c, nd = a["corrected"] == truth, a["no_defense"] == truth
            out["corrected_only"] += int((c & ~nd).sum())
            out["undefended_only"] += int((nd & ~c).sum())
            out["concordant"] += int((c == nd).sum())
        return out


def ledger(bootstrap: str, topic: str, isolation: str = "read_committed") -> tuple[Counter, dict[str, int]]:
    """Evidence records per request id, and the defense counts they sum to."""
    ids: Counter = Counter()
    sums = dict.fromkeys(PAIRS, 0)
    for r in records(bootstrap, topic, isolation):
        body = json.loads(r.value)
        ids[body["id"]] += 1
        for row in body["evidence"]:
            if row[0] == "defense":
                for pair, n in zip(PAIRS, row[4:7], strict=True):
                    sums[pair] += n
    return ids, sums


def counters(port: int) -> dict[str, float]:
    m = scrape(port)
    out = {
        pair: m.get(f'adae_evidence_defense_instances_total{{detector="adae",pair="{pair}",version="1"}}', 0.0)
        for pair in PAIRS
    }
    out["joined"] = m.get('adae_feedback_records_total{result="joined"}', 0.0)
    return out


def test_every_labels_evidence_is_on_the_ledger_once_through_rejections_an_eviction_and_a_sigkill(
    apache_kafka, digits_setup, digits_detector_path, tmp_path
):
    bootstrap, port = apache_kafka.bootstrap, free_port()
    tag = uuid.uuid4().hex[:6]
    cfg = make_config(
        bootstrap,
        digits_detector_path,
        delivery="exactly_once",
        kafka={
            "feedback_topic": f"fb-{tag}",
            # a pause or a kill lands in a transaction holding labels: committed every 2 s, not when idle
            "commit_interval_ms": 2000,
            "commit_when_idle": False,
            "session_timeout_ms": 6000,
            "transactional_id": f"evidence-{tag}",  # the restart fences the killed one and aborts its transaction
        },
        metrics={"enabled": True, "port": port},
    )
    create_topic(bootstrap, cfg.kafka.input_topic, max_message_bytes=str(INPUT_LIMIT))
    evidence_topic = cfg.kafka.evidence_topic
    proc = PipelineProcess(cfg, tmp_path, "evidence")
    traffic = Traffic(bootstrap, cfg, digits_setup["Xte"], digits_setup["yte"])
    try:
        proc.start()
        assert proc.wait_log("partitions assigned", timeout_s=120), proc.text()[-3000:]
        traffic.ask(120)  # every label below, with room for the injections repeated
        lower_limit(bootstrap, cfg.kafka.output_topic)  # the service still checks against its own 8 MiB

        def dead_lettered(n: int) -> bool:
            return len(records(bootstrap, cfg.kafka.dead_letter_topic)) >= n

        # one rejected answer per transaction: each group's big request is dead-lettered before the next
        for group in range(5):
            traffic.label(10)
            traffic.big()
            wait_for(lambda g=group: dead_lettered(g + 1), 120, f"big request {group} dead-lettered")
        # two in one window
        traffic.label(10)
        traffic.big()
        traffic.big()
        wait_for(lambda: dead_lettered(7), 120, "both big requests of one window dead-lettered")

        def in_open_transaction(sig: int) -> bool:
            """Labels whose evidence is written, then ``sig``: whether none of it was committed by then
            (the commit may land between the two; the caller then injects again)."""
            ids = traffic.label(10)
            wait_for(
                lambda: set(ids) <= set(ledger(bootstrap, evidence_topic, "read_uncommitted")[0]),
                60,
                "the labels' evidence written",
            )
            proc.signal(sig)
            return not set(ids) & set(ledger(bootstrap, evidence_topic)[0])

        # an eviction: paused with labels in its open transaction, past the session timeout
        for _attempt in range(3):
            if in_open_transaction(signal.SIGSTOP):
                break
            proc.signal(signal.SIGCONT)
        else:
            raise AssertionError("could not pause the process with labels in an open transaction")
        evicted_at = proc.text().count("transaction aborted") + proc.text().count("partitions lost")
        wait_for(_session_expired(bootstrap, cfg), 60, "the group moving on without the paused member")
        proc.signal(signal.SIGCONT)
        wait_for(
            lambda: proc.text().count("transaction aborted") + proc.text().count("partitions lost") > evicted_at,
            60,
            "the resumed process finding itself evicted",
        )
        before_kill = list(traffic.labelled)
        wait_for(
            lambda: set(ledger(bootstrap, evidence_topic)[0]) >= set(before_kill), 120, "the labels so far committed"
        )
        ids, sums = ledger(bootstrap, evidence_topic)
        assert proc.proc.poll() is None and "pipeline stopped" not in proc.text(), proc.text()[-3000:]
        wait_for(lambda: counters(port)["joined"] == len(before_kill), 60, "the counters at the commit")
        assert counters(port) == {**{p: float(n) for p, n in sums.items()}, "joined": float(len(before_kill))}

        # a SIGKILL with labels in an open transaction; the restart (same transactional id) aborts it
        for _attempt in range(3):
            killed_mid_transaction = in_open_transaction(signal.SIGKILL)
            proc.wait(30)
            proc.start()
            assert proc.wait_log("partitions assigned", timeout_s=120), proc.text()[-3000:]
            if killed_mid_transaction:
                break
        else:
            raise AssertionError("could not kill the process with labels in an open transaction")
        wait_for(
            lambda: set(ledger(bootstrap, evidence_topic)[0]) >= set(traffic.labelled), 120, "every label committed"
        )
        ids, sums = ledger(bootstrap, evidence_topic)
        everything, _ = ledger(bootstrap, evidence_topic, "read_uncommitted")
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.text()[-3000:]
    finally:
        traffic.p.close()
        proc.cleanup()
    print(
        f"\n[evidence faults] labels={len(traffic.labelled)} ledger records={sum(ids.values())} "
        f"aborted evidence records on the log={sum(everything.values()) - sum(ids.values())}"
    )
    assert ids == Counter(traffic.labelled), [rid for rid, n in (ids - Counter(traffic.labelled)).items()][:10]
    assert sums == traffic.want(traffic.labelled)
    assert sum(everything.values()) > sum(ids.values())  # the faults did abort evidence, which was redone
    dead = Counter(r.key.decode() for r in records(bootstrap, cfg.kafka.dead_letter_topic))
    assert dead == Counter(traffic.bigs)  # each rejected request dead-lettered once: nothing looped


def _session_expired(bootstrap: str, cfg):
    """Whether the group has no live member (the paused one's session timed out)."""

    def expired() -> bool:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            group = admin.describe_groups([cfg.kafka.group_id])[cfg.kafka.group_id]
            return not group.get("members")
        finally:
            admin.close()

    return expired
