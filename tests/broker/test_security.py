"""Least privilege on Apache Kafka: SASL_SSL with SCRAM-SHA-512 (a certificate made for the run) and the
StandardAuthorizer, nothing allowed that no ACL grants.

The service runs with exactly the ACLs ``required_acls`` derives from its config (the list the README and
``adae-stream acls`` give), in both delivery modes. One missing ACL (WRITE on the output topic) or a wrong
password stops it with one clear line and exit 1, committing nothing it did not publish; a restart after
the fix answers everything. The harness itself works on the broker's plaintext loopback listener.
"""

from __future__ import annotations

import signal

import pytest
from kafka import KafkaConsumer
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    NewTopic,
    ResourcePattern,
    ResourceType,
)
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from adae_stream.codecs import decode_response
from adae_stream.config import Config
from adae_stream.decisions.service import DecisionService
from adae_stream.feedback.evidence import Counts, PairedEvidence
from adae_stream.feedback.ledger import encode_evidence
from adae_stream.stream.acls import Acl, decider_acls, required_acls
from tests.apache_kafka import ApacheKafka, Scram
from tests.kafka_helpers import collect, make_config, produce_requests, producer, start_pipeline
from tests.process_helpers import PipelineProcess
from tests.waiting import wait_for

SERVICE = Scram("adae", "adae-secret-1")
DECIDER = Scram("adae-decide", "adae-secret-2")  # the decision-maker's own principal
PRINCIPAL = f"User:{SERVICE.name}"
OUTPUT_LIMIT = 2 * 1024 * 1024  # the platform team's limit for the output topic, read by DescribeConfigs


@pytest.fixture(scope="module")
def secured():
    node = ApacheKafka(security="sasl_ssl", users=(SERVICE, DECIDER)).start()
    yield node
    node.stop()


def service_config(node: ApacheKafka, detector_path, delivery: str, password: str = SERVICE.password) -> Config:
    cfg = make_config(
        node.bootstrap,
        detector_path,
        delivery=delivery,
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": SERVICE.name,
            "sasl_plain_password": password,
            "ssl_cafile": str(node.ca_file),
            "create_topics": False,  # topics belong to the platform team; the service only needs to use them
            "transactional_id": None,
        },
    )
    admin = node.admin()
    try:
        topics = [cfg.kafka.input_topic, cfg.kafka.output_topic, cfg.kafka.dead_letter_topic, cfg.kafka.summary_topic]
        limit = {"max.message.bytes": str(OUTPUT_LIMIT)}
        admin.create_topics(
            [NewTopic(t, cfg.kafka.partitions, 1, topic_configs=limit if t == topics[1] else {}) for t in topics]
        )
    finally:
        admin.close()
    return cfg


def kafka_acl(rule: Acl, principal: str = PRINCIPAL) -> ACL:
    pattern = ResourcePattern(ResourceType[rule.resource], rule.name, ACLResourcePatternType[rule.pattern])
    return ACL(principal, "*", ACLOperation[rule.operation], ACLPermissionType.ALLOW, pattern)


def grant(node: ApacheKafka, rules: list[Acl], principal: str = PRINCIPAL) -> None:
    admin = node.admin()
    try:
        result = admin.create_acls([kafka_acl(r, principal) for r in rules])
        assert not result["failed"], result["failed"]
    finally:
        admin.close()


def committed(node: ApacheKafka, cfg: Config) -> dict[int, int | None]:
    c = KafkaConsumer(bootstrap_servers=node.admin_bootstrap, group_id=cfg.kafka.group_id, enable_auto_commit=False)
    try:
        return {p: c.committed(TopicPartition(cfg.kafka.input_topic, p)) for p in range(cfg.kafka.partitions)}
    finally:
        c.close()


def the_one_stop_line(proc: PipelineProcess) -> str:
    """Run the service until it stops by itself: exit 1 and exactly one 'pipeline stopped:' line."""
    try:
        proc.start()
        rc = proc.wait(120)
    finally:
        proc.cleanup()
    text = proc.text()
    stopped = [line for line in text.splitlines() if "pipeline stopped:" in line]
    assert rc == 1 and len(stopped) == 1, text[-3000:]
    return stopped[0]


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_exactly_the_documented_acls_suffice(secured, digits_setup, digits_scorer, digits_detector_path, delivery):
    cfg = service_config(secured, digits_detector_path, delivery)
    rules = required_acls(cfg)
    assert {r.operation for r in rules} >= {"READ", "WRITE", "DESCRIBE_CONFIGS", "IDEMPOTENT_WRITE"}
    assert any(r.resource == "TRANSACTIONAL_ID" for r in rules) == (delivery == "exactly_once")
    grant(secured, rules)
    sent = produce_requests(secured.admin_bootstrap, cfg.kafka.input_topic, digits_setup["Xte"][:40], "v2", batch=4)
    p = producer(secured.admin_bootstrap)
    p.send(cfg.kafka.input_topic, value=b"not a request", key=b"junk").get(30)
    p.close()
    run = start_pipeline(cfg, digits_scorer)
    answers = collect(secured.admin_bootstrap, cfg.kafka.output_topic, len(sent), timeout_s=90)
    dead = collect(secured.admin_bootstrap, cfg.kafka.dead_letter_topic, 1, timeout_s=30)
    assert run.stop() == 0, run.pipeline.failure
    assert {decode_response(r.value, r.headers)["id"] for r in answers} == set(sent)
    assert [r.key for r in dead] == [b"junk"]
    assert run.pipeline.sink.answer_limit == OUTPUT_LIMIT  # DescribeConfigs was allowed
    assert all(off is not None for off in committed(secured, cfg).values())


def test_a_missing_write_acl_stops_cleanly_and_a_restart_after_the_fix_loses_nothing(
    secured, digits_setup, digits_detector_path, tmp_path
):
    cfg = service_config(secured, digits_detector_path, "at_least_once")
    rules = required_acls(cfg)
    missing = [r for r in rules if r.name == cfg.kafka.output_topic and r.operation == "WRITE"]
    grant(secured, [r for r in rules if r not in missing])
    sent = produce_requests(secured.admin_bootstrap, cfg.kafka.input_topic, digits_setup["Xte"][:40], "v2", batch=4)
    proc = PipelineProcess(cfg, tmp_path, "no-write")
    stopped = the_one_stop_line(proc)
    assert "TopicAuthorizationFailed" in stopped, stopped
    # nothing was published, so no offset past the start is committed
    assert set(committed(secured, cfg).values()) <= {None, 0}
    grant(secured, missing)
    try:
        proc.start()
        assert proc.wait_log("partitions assigned", timeout_s=120), proc.text()[-3000:]
        answers = collect(secured.admin_bootstrap, cfg.kafka.output_topic, len(sent), timeout_s=90)
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.text()[-3000:]
    finally:
        proc.cleanup()
    assert {decode_response(r.value, r.headers)["id"] for r in answers} == set(sent)


def test_a_wrong_password_stops_with_one_line_and_exit_1(secured, digits_detector_path, tmp_path):
    cfg = service_config(secured, digits_detector_path, "at_least_once", password="not-the-password")
    cfg.kafka.connect_timeout_s = 300.0  # it must not wait for this
    grant(secured, required_acls(cfg))
    proc = PipelineProcess(cfg, tmp_path, "wrong-password")
    stopped = the_one_stop_line(proc)
    assert "refused the login of 'adae'" in stopped and "not-the-password" not in proc.text()


def test_the_decision_maker_reads_the_ledger_and_summaries_with_its_documented_acls(secured, tmp_path, caplog):
    (tmp_path / "repo").mkdir()
    cfg = make_config(
        secured.bootstrap,
        "unused",
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": DECIDER.name,
            "sasl_plain_password": DECIDER.password,
            "ssl_cafile": str(secured.ca_file),
            "feedback_topic": f"fb-{tmp_path.name[-8:]}",
        },
        detector={"path": None, "repository": str(tmp_path / "repo")},
    )
    admin = secured.admin()
    try:
        admin.create_topics([NewTopic(cfg.kafka.evidence_topic, 2, 1)])
    finally:
        admin.close()
    evidence = [PairedEvidence("defense", "a", "1", "1", Counts(2, 1, 5))]
    p = producer(secured.admin_bootstrap)
    p.send(cfg.kafka.evidence_topic, value=encode_evidence(evidence), key=b"a").get(30)
    p.close()
    rules = decider_acls(cfg)
    assert [(r.resource, r.name, r.operation) for r in rules] == [
        ("TOPIC", cfg.kafka.evidence_topic, "READ"),
        ("TOPIC", cfg.kafka.summary_topic, "READ"),  # the change detectors in the same process
    ]
    service = DecisionService(cfg, cfg.kafka.bootstrap_servers)
    try:
        # nothing is allowed that no ACL grants: the topic is hidden, and the log says why nothing is read
        assert service.reader.read(service.state.totals, timeout_s=5) == 0 and not service.state.totals.tallies
        assert "is not visible" in caplog.text and "acls --decide" in caplog.text
        grant(secured, rules, f"User:{DECIDER.name}")
        wait_for(
            lambda: _read_quietly(service) and service.state.totals.get("defense", "a", 1, 1) == Counts(2, 1, 5),
            60,
            "the ledger read under the decision-maker's own principal",
        )
    finally:
        service.close()


def _read_quietly(service) -> bool:
    """One read of the ledger; False while the broker's ACL cache has not caught up."""
    try:
        service.reader.read(service.state.totals, timeout_s=5)
    except KafkaError:
        return False
    return True
