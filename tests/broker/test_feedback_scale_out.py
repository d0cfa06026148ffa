"""Labels join whichever replica they reach: several replicas in one group on Apache Kafka.

Each case answers 600 requests of 4 instances, then sends one feedback record per request, and sums the
feedback counters of every live replica. Every case must join 600 of 600 labels (2,400 instances), none
`unknown`, none counted twice. Before the join read the whole group's answers, three replicas joined a
third of the labels when the requests or labels were not keyed by id, or the two topics had different
partition counts, and lost more when replicas were stopped or added in between (the issue's table).

Replicas run as threads of this process (each its own Pipeline, clients and metrics registry), so the
detector loads once; the replica that is SIGKILLed is a real process, read over its /metrics.
"""

from __future__ import annotations

import json
import signal
import uuid

import numpy as np
import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from adae_stream.codecs import decode_response, encode_request
from adae_stream.monitoring.metrics import PipelineMetrics
from adae_stream.stream.broker import free_port
from tests.kafka_helpers import collect, create_topic, make_config, producer, start_pipeline
from tests.platform_helpers import metrics as scrape
from tests.process_helpers import PipelineProcess
from tests.waiting import wait_for

REQUESTS, INSTANCES = 600, 4
COUNTERS = ("joined", "duplicate", "unknown", "late", "unplaced", "dead_letter")
EVIDENCE = ("corrected_only", "undefended_only", "concordant")  # the defense decision's paired counts


class ThreadReplica:
    """A Pipeline in a thread with its own metrics registry."""

    def __init__(self, cfg, scorer) -> None:
        self.registry = CollectorRegistry()
        self.metrics = PipelineMetrics(scorer.info.threshold, registry=self.registry)
        self.running = start_pipeline(cfg, scorer, self.metrics)

    def counts(self) -> dict[str, float]:
        get = self.registry.get_sample_value
        out = {r: get("adae_feedback_records_total", {"result": r}) or 0.0 for r in COUNTERS}
        out["instances"] = get("adae_feedback_instances_total") or 0.0
        out["corrected"] = get("adae_feedback_correct_total", {"prediction": "corrected"}) or 0.0
        for pair in EVIDENCE:
            labels = {"detector": "adae", "version": "1", "pair": pair}
            out[pair] = get("adae_evidence_defense_instances_total", labels) or 0.0
        return out

    @property
    def ready(self) -> bool:
        return self.running.pipeline.ready

    def stop(self) -> None:
        assert self.running.stop() == 0


class ProcessReplica:
    """A replica as its own process (so it can be SIGKILLed), read over /metrics."""

    def __init__(self, cfg, tmp_path, name: str) -> None:
        self.port = free_port()
        own = cfg.model_copy(deep=True)
        own.metrics.enabled, own.metrics.port = True, self.port
        self.proc = PipelineProcess(own, tmp_path, name).start()

    def counts(self) -> dict[str, float]:
        m = scrape(self.port)
        out = {r: m.get(f'adae_feedback_records_total{{result="{r}"}}', 0.0) for r in COUNTERS}
        out["instances"] = m.get("adae_feedback_instances_total", 0.0)
        out["corrected"] = m.get('adae_feedback_correct_total{prediction="corrected"}', 0.0)
        for pair in EVIDENCE:  # the exposition sorts labels by name
            out[pair] = m.get(
                f'adae_evidence_defense_instances_total{{detector="adae",pair="{pair}",version="1"}}', 0.0
            )
        return out

    @property
    def ready(self) -> bool:
        if "partitions assigned" not in self.proc.text():
            return False
        try:
            return bool(scrape(self.port))
        except OSError:
            return False


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def total(replicas) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in replicas:
        for k, v in r.counts().items():
            out[k] = out.get(k, 0.0) + v
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def send_requests(bootstrap: str, topic: str, X: np.ndarray, prefix: str, keyed) -> dict[str, np.ndarray]:
    """REQUESTS requests of INSTANCES instances; ``keyed(i)`` says whether request i is keyed by its id."""
    p = producer(bootstrap)
    sent = {}
    for i in range(REQUESTS):
        rid = f"{prefix}-{i}"
        j = (i * INSTANCES) % (len(X) - INSTANCES)
        payload, headers = encode_request(X[j : j + INSTANCES], "v2", rid)
        p.send(topic, value=payload, key=rid.encode() if keyed(i) else None, headers=headers)
        sent[rid] = X[j : j + INSTANCES]
    p.flush()
    p.close()
    return sent


def answered(bootstrap: str, topic: str, ids: set[str]) -> dict[str, dict]:
    """Every request answered (at least once), read back from the output topic."""
    got: dict[str, dict] = {}

    def complete() -> bool:
        for rec in collect(bootstrap, topic, 10**9, timeout_s=5, idle_s=1.0):
            answer = decode_response(rec.value, rec.headers)
            got[answer["id"]] = answer
        return ids <= set(got)

    wait_for(complete, 120, f"{len(ids)} requests answered")
    return got


def send_labels(bootstrap: str, topic: str, truth: dict[str, np.ndarray], keyed) -> None:
    p = producer(bootstrap)
    for i, (rid, y) in enumerate(sorted(truth.items())):
        p.send(
            topic, value=json.dumps({"id": rid, "labels": y.tolist()}).encode(), key=rid.encode() if keyed(i) else None
        )
    p.flush()
    p.close()


def wait_joined(replicas, before: dict[str, float], n: int) -> dict[str, float]:
    """Until the live replicas have decided ``n`` more labels (any result) and counted the paired evidence
    of every instance joined (separate counters, read one after the other), then a last look."""

    def settled() -> bool:
        got = delta(total(replicas), before)
        return sum(got[r] for r in COUNTERS) >= n and sum(got[p] for p in EVIDENCE) >= got["instances"]

    wait_for(settled, 120, f"{n} labels decided")
    return delta(total(replicas), before)


def labels_for(sent: dict[str, np.ndarray], answers: dict[str, dict], rng) -> tuple[dict[str, np.ndarray], dict]:
    """Labels for every request, and what the join must count for them, from the answers on the output
    topic: how often the corrected prediction is right, and the defense's paired evidence."""
    truth = {rid: rng.integers(0, 10, INSTANCES) for rid in sent}
    want = {"corrected": 0.0, **dict.fromkeys(EVIDENCE, 0.0)}
    for rid, y in truth.items():
        c_right, nd_right = answers[rid]["corrected"] == y, answers[rid]["no_defense"] == y
        want["corrected"] += float(c_right.sum())
        want["corrected_only"] += float((c_right & ~nd_right).sum())
        want["undefended_only"] += float((nd_right & ~c_right).sum())
        want["concordant"] += float((c_right == nd_right).sum())
    return truth, want


def assert_all_joined_once(got: dict[str, float], want: dict) -> None:
    assert got["joined"] == REQUESTS and got["instances"] == REQUESTS * INSTANCES, got
    assert got["unknown"] == got["unplaced"] == got["duplicate"] == got["late"] == got["dead_letter"] == 0, got
    assert {k: got[k] for k in want} == want, got  # the evidence summed over replicas is all of it


@pytest.mark.parametrize("feedback_partitions", [6, 3])
def test_three_replicas_join_every_label_keyed_or_not(
    apache_kafka, digits_setup, digits_scorer, digits_detector_path, feedback_partitions
):
    """Half the requests and labels keyed by id, half unkeyed; feedback with as many partitions as the
    input, or half as many."""
    cfg = make_config(
        apache_kafka.bootstrap, digits_detector_path, kafka={"partitions": 6, "feedback_topic": fresh("fb")}
    )
    create_topic(apache_kafka.bootstrap, cfg.kafka.feedback_topic, partitions=feedback_partitions)
    replicas = [ThreadReplica(cfg, digits_scorer) for _ in range(3)]
    try:
        wait_for(lambda: all(r.ready for r in replicas), 90, "three replicas assigned")
        half = lambda i: i % 2 == 0  # noqa: E731
        sent = send_requests(apache_kafka.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"], "r", half)
        answers = answered(apache_kafka.bootstrap, cfg.kafka.output_topic, set(sent))
        truth, want = labels_for(sent, answers, np.random.default_rng(feedback_partitions))
        before = total(replicas)
        send_labels(apache_kafka.bootstrap, cfg.kafka.feedback_topic, truth, half)
        got = wait_joined(replicas, before, REQUESTS)
        assert_all_joined_once(got, want)
        decided = [sum(r.counts()[k] for k in COUNTERS) for r in replicas]
        assert sum(decided) == REQUESTS and sum(d > 0 for d in decided) >= 2  # labels reached several replicas
    finally:
        for r in replicas:
            r.stop()


def committed_all(bootstrap: str, group: str, topic: str) -> bool:
    """The group's committed offsets of ``topic`` are at its end (Apache Kafka's ListOffsets is right):
    no label will be read, and counted, again after a replica dies."""
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        return all((reader.committed(tp) or 0) >= end for tp, end in reader.end_offsets(tps).items())
    finally:
        reader.close()


def test_labels_join_after_a_replica_stops_one_is_added_and_one_is_killed(
    apache_kafka, digits_setup, digits_scorer, digits_detector_path, tmp_path
):
    """Between the answers and their labels: a fourth replica starts beside three; one of the four stops;
    one of the three left is SIGKILLed. Nothing is keyed by id. Each time all 600 labels join, once."""
    cfg = make_config(
        apache_kafka.bootstrap,
        digits_detector_path,
        kafka={"partitions": 6, "feedback_topic": fresh("fb"), "commit_interval_ms": 200},
    )
    X, bootstrap, rng = digits_setup["Xte"], apache_kafka.bootstrap, np.random.default_rng(0)
    unkeyed = lambda i: False  # noqa: E731  the hardest case: nothing keyed by id
    a, b = ThreadReplica(cfg, digits_scorer), ThreadReplica(cfg, digits_scorer)
    killable = ProcessReplica(cfg, tmp_path, "k")
    live: list = [a, b, killable]
    added = None
    try:
        wait_for(lambda: all(r.ready for r in live), 120, "three replicas assigned")

        def phase(prefix: str, change) -> None:
            sent = send_requests(bootstrap, cfg.kafka.input_topic, X, prefix, unkeyed)
            answers = answered(bootstrap, cfg.kafka.output_topic, set(sent))
            truth, want = labels_for(sent, answers, rng)
            wait_for(
                lambda: committed_all(bootstrap, cfg.kafka.group_id, cfg.kafka.feedback_topic), 60, "labels committed"
            )
            change()
            before = total(live)
            send_labels(bootstrap, cfg.kafka.feedback_topic, truth, unkeyed)
            assert_all_joined_once(wait_joined(live, before, REQUESTS), want)

        def stop_one() -> None:
            b.stop()
            live.remove(b)

        def add_one() -> None:
            nonlocal added
            added = ThreadReplica(cfg, digits_scorer)
            live.append(added)
            wait_for(lambda: added is not None and added.ready, 60, "the added replica assigned")

        def kill_one() -> None:
            killable.proc.signal(signal.SIGKILL)
            killable.proc.wait(30)
            live.remove(killable)

        phase("added", add_one)  # three replicas answer, a fourth starts before the labels
        phase("stopped", stop_one)  # four answer, one stops
        phase("killed", kill_one)  # three answer, one is SIGKILLed
    finally:
        for r in (a, added):
            if r is not None:
                r.stop()
        killable.proc.cleanup()
