"""The least privileges the service needs on a Kafka cluster with an authorizer, derived from its config.

One list serves three readers: ``adae-stream acls`` prints it as ``kafka-acls.sh`` commands for the
operator, the README's table describes it, and the security test grants exactly it on Apache Kafka
with the StandardAuthorizer (and checks that taking one away stops the service cleanly).
"""

from __future__ import annotations

from dataclasses import dataclass

from adae_stream.clients.build import topic_limits, written_topics
from adae_stream.config import Config, input_topics


@dataclass(frozen=True)
class Acl:
    """An ALLOW rule for the service's principal. ``resource`` is TOPIC, GROUP, CLUSTER or
    TRANSACTIONAL_ID; ``pattern`` LITERAL or PREFIXED; ``operation`` as Kafka spells it."""

    resource: str
    name: str
    operation: str
    why: str
    pattern: str = "LITERAL"

    def kafka_acls_command(self, principal: str) -> str:
        resource = {
            "TOPIC": f"--topic '{self.name}'",
            "GROUP": f"--group '{self.name}'",
            "CLUSTER": "--cluster",
            "TRANSACTIONAL_ID": f"--transactional-id '{self.name}'",
        }[self.resource]
        operation = "".join(part.title() for part in self.operation.split("_"))  # DescribeConfigs
        return (
            f"kafka-acls.sh --bootstrap-server $BOOTSTRAP --add --allow-principal '{principal}' "
            f"--operation {operation} {resource} --resource-pattern-type {self.pattern.lower()}"
        )


def transactional_id_rule(cfg: Config) -> tuple[str, str]:
    """The transactional id (LITERAL) or the prefix every process's generated id starts with (PREFIXED)."""
    kafka = cfg.kafka
    if kafka.transactional_id:
        return kafka.transactional_id, "LITERAL"
    return f"{kafka.client_id}-{kafka.group_id}-", "PREFIXED"


def required_acls(cfg: Config) -> list[Acl]:
    kafka = cfg.kafka
    rules: list[Acl] = []
    if kafka.input_pattern:
        rules.append(
            Acl("TOPIC", "<prefix of kafka.input_pattern>", "READ", "read the matching input topics", "PREFIXED")
        )
    for topic in input_topics(kafka):
        rules.append(Acl("TOPIC", topic, "READ", "read requests (READ implies DESCRIBE)"))
    if kafka.feedback_topic:
        rules.append(Acl("TOPIC", kafka.feedback_topic, "READ", "read ground-truth labels"))
        rules.append(Acl("TOPIC", kafka.output_topic, "READ", "the feedback join reads every replica's answers"))
        if kafka.shadow_topic:
            rules.append(Acl("TOPIC", kafka.shadow_topic, "READ", "the feedback join reads every shadow's predictions"))
    rules.append(Acl("GROUP", kafka.group_id, "READ", "join the consumer group and commit its offsets"))
    for topic in written_topics(kafka):
        rules.append(
            Acl(
                "TOPIC",
                topic,
                "WRITE",
                "publish answers / dead letters / captures / shadow predictions / evidence / summaries",
            )
        )
        rules.append(Acl("TOPIC", topic, "DESCRIBE_CONFIGS", "read its max.message.bytes at start"))
    rules.append(Acl("CLUSTER", "kafka-cluster", "IDEMPOTENT_WRITE", "the idempotent producer (acks=all)"))
    if cfg.delivery == "exactly_once":
        name, pattern = transactional_id_rule(cfg)
        rules.append(Acl("TRANSACTIONAL_ID", name, "WRITE", "transactions (WRITE implies DESCRIBE)", pattern))
    if kafka.create_topics:
        for topic in topic_limits(kafka):
            rules.append(Acl("TOPIC", topic, "CREATE", "kafka.create_topics: create it when missing"))
    return rules


def decider_acls(cfg: Config) -> list[Acl]:
    """``adae-stream decide``'s: it reads the evidence ledger and the batch summaries outside any group and
    writes nothing to Kafka."""
    rules = []
    if cfg.kafka.evidence_topic is not None:
        rules.append(Acl("TOPIC", cfg.kafka.evidence_topic, "READ", "adae-stream decide reads the evidence ledger"))
    if cfg.kafka.summary_topic is not None:
        rules.append(Acl("TOPIC", cfg.kafka.summary_topic, "READ", "adae-stream decide watches the batch summaries"))
    return rules
