"""Configuration: the schema, typed and validated by pydantic, loaded by typed_settings.py from YAML
(safe_load) and ``ADAE_<SECTION>__<KEY>`` environment overrides (pydantic-settings).

Every problem becomes one ConfigError line that names the key, raised at start-up, never mid-stream.
Ranges of one field sit on the field (``Field(ge=...)``); rules between fields are in ``_validate``.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from adae_stream.errors import ConfigError
from adae_stream.scoring import buckets_up_to
from adae_stream.typed_settings import ENV_NESTING, ENV_PREFIX, Duration, is_secret, load

# pydantic's lax mode, as environment variables (all text) need: "7" is read as 7 and "false" as False,
# but a word is no number and 3 is no bool. A string field from the environment takes the text verbatim;
# in YAML a number is no string (a password of digits must be quoted there).
_SECTION = ConfigDict(extra="forbid")
Positive = Annotated[int, Field(ge=1)]


class KafkaConfig(BaseModel):
    """One flat section, as kafka-python names its settings (security keys pass through to it unchanged),
    in four groups: where, topics, security, tuning."""

    model_config = _SECTION

    # --- where
    bootstrap_servers: str = "embedded"
    group_id: str = "adae-stream"
    client_id: str = "adae-stream"
    # --- topics
    input_topic: str | list[str] = "adae-requests"  # one topic or a list (a tap may read several)
    input_pattern: str | None = None  # a regex of topics to read instead (e.g. ^seldon\.prod\.model\..*\.inputs$)
    # answers: answer every request. Monitor-only taps: flagged publishes only the flagged instances (with
    # their instance_index), nothing no answer; both export every metric and never write to the inputs.
    publish: Literal["answers", "flagged", "nothing"] = "answers"
    feedback_topic: str | None = None  # ground-truth labels of earlier requests (unset: no feedback loop)
    flagged_topic: str | None = None  # every request with a flagged instance, for review (unset: off)
    # a shadow's predictions for every replica's join; unset with a feedback_topic: "<output_topic>-shadow"
    shadow_topic: str | None = None
    # every label's paired evidence, the ledger the decider sums, written in the transaction that consumes
    # the label (feedback/ledger.py); unset with a feedback_topic: "<output_topic>-evidence"
    evidence_topic: str | None = None
    # with monitoring.enabled and this unset: "<output_topic>-summaries" (feedback/summaries.py)
    summary_topic: str | None = None
    output_topic: str = "adae-predictions"
    dead_letter_topic: str = "adae-dead-letter"
    create_topics: bool = True
    partitions: Positive = 4
    replication_factor: int = 1
    # --- security (kafka_security_kwargs)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    sasl_kerberos_service_name: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    ssl_crlfile: str | None = None
    ssl_check_hostname: bool = True
    # --- tuning: sizes, consumer, producer, timeouts, transactions
    max_message_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 1000
    fetch_max_wait_ms: int = 100
    max_poll_records: int = 500
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    # unset: 0 under at_least_once (answers pile up behind the request in flight by themselves), else
    # EXACTLY_ONCE_LINGER_MS: the commit flushes and is the wait (benchmarks/RESULTS.md, "Latency at every load")
    linger_ms: Annotated[int | None, Field(ge=0)] = None
    connect_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    delivery_timeout_s: float = 30.0
    commit_interval_ms: int = 200
    # exactly_once: commit as soon as the loop has caught up; false: only every commit_interval_ms
    commit_when_idle: bool = True
    # exactly_once: unique to this replica and stable across its restarts (a StatefulSet pod name): a restart
    # then aborts its predecessor's open transaction at once; unset, that blocks read_committed readers
    # until transaction_timeout_ms
    transactional_id: str | None = None
    transaction_timeout_ms: int = 60000


class DetectorConfig(BaseModel):
    model_config = _SECTION

    path: str | None = None  # one detector that serves every record
    # or a repository of many, DIR/<name>/<version>/ (detector/repository.py), routed by model name
    repository: str | None = None
    poll_s: Annotated[float, Field(gt=0)] = 10.0  # how often the repository is read again (and on SIGHUP)
    routes: list[dict[str, str]] = Field(default_factory=list)  # {detector, model} or {detector, topic: REGEX}
    max_detectors: Positive = 32  # bounds the per-detector metric series
    return_all_predictions: bool = True
    return_instance_score: bool = True
    model_name: str = "adae"
    # true: XLA on TF, torch.compile on torch (JAX always compiles): faster per call, slower to start; auto:
    # on TF, per bucket, XLA where warm-up measures it faster (detector/compile_choice.py, README)
    jit_compile: bool | Literal["auto"] = "auto"
    # this process's Keras backend (else KERAS_BACKEND, else tensorflow); one per process, torch for a
    # PyTorch classifier
    backend: Literal["tensorflow", "jax", "torch"] | None = None
    # a PyTorch classifier saved as TorchScript runs its own code when called: refused unless true
    allow_torchscript: bool = False


DEFAULT_MAX_BATCH = 256


class BatchingConfig(BaseModel):
    model_config = _SECTION

    max_batch_size: Positive = DEFAULT_MAX_BATCH
    # score what is pending once the consumer has nothing more buffered (natural batching); false: a batch
    # waits up to max_batch_delay_ms to fill (README, "Latency at every load")
    dispatch_when_idle: bool = True
    max_batch_delay_ms: Annotated[float, Field(ge=0)] = 10.0
    bucket_sizes: Annotated[list[Positive], Field(min_length=1)] = Field(
        default_factory=lambda: buckets_up_to(DEFAULT_MAX_BATCH)
    )


class MetricsConfig(BaseModel):
    model_config = _SECTION

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9108
    window_size: Annotated[int, Field(ge=10)] = 2000
    drift_interval_s: float = 5.0
    max_class_labels: int = 20


class FeedbackConfig(BaseModel):
    model_config = _SECTION

    # how long an answer waits for its labels (and how far back a restart reads)
    window_s: Annotated[float, Field(gt=0)] = 3600.0
    max_instances: Positive = 1_000_000  # memory bound of the join: oldest answers go first
    # how far the replicas' clocks may be apart: a label whose answer is not found yet waits until the join
    # has read the answers of every output partition up to its arrival plus this (feedback/join_tail.py)
    clock_skew_s: Annotated[float, Field(ge=0)] = 5.0
    max_pending: Positive = 100_000  # labels waiting for their answer; beyond: unplaced, reason pending_full


class FlaggedConfig(BaseModel):
    model_config = _SECTION

    # share of requests with a flagged instance captured (by request id: stable)
    sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    max_instances: Positive = 256  # flagged instances per captured record; the rest are counted, not sent


class DecisionsConfig(BaseModel):
    """The decision-maker's (``adae-stream decide``; README, "Decisions from live evidence")."""

    model_config = _SECTION

    # the chance of any false decision, shared over every test under way: each of the two tests of each of
    # the K detectors gets alpha / (2K)
    alpha: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05
    min_discordant: Positive = 30  # labelled instances where the two options differ, before any decision
    margin: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # promotion: the shadow at least this close (0: better)
    probation_instances: Positive = 2000  # labelled instances a promoted version is compared with the one it replaced
    guard_factor: Annotated[float, Field(gt=0.0)] = 3.0  # label-free guard: shadow flag rate over its FPR bound x this
    guard_min_instances: Positive = 200  # unflagged-by-serving instances before the guard can pass
    interval_s: Annotated[float, Field(gt=0.0)] = 5.0  # how often the ledger is read and the tests checked
    audit_keep: Positive = 50  # decisions kept in each policy.yaml (all of them go to the log)
    metrics_port: int = Field(default=9400, ge=0, le=65535)  # its own /metrics; 0: off
    # after a switch of what answers publish, switching back is a change to detect: at least this many
    # discordant pairs on average before a false switch back (README, "Decisions from live evidence")
    switch_back_arl: Annotated[float, Field(gt=1.0)] = 3000.0


class MonitoringConfig(BaseModel):
    """The fleet's change detectors on flags, score shape and class mix (README, "Change detection")."""

    model_config = _SECTION

    # the replicas publish batch summaries (kafka.summary_topic) and `adae-stream decide` watches them
    enabled: bool = True
    # one false alarm per this much time at the observed rate, per detector and role, for the whole fleet
    false_alarm_every: Duration = 30 * 86400.0
    # live instances each version's pre-change rates are estimated from, fleet-wide, before it is watched
    baseline_instances: Positive = 60_000
    # the rates designed for are upper bounds at this confidence: a low estimate must not alarm for ever
    baseline_confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.999
    # the rises each event is watched for (odds ratios); each chart gets its share of the false alarms
    odds_ratios: Annotated[list[Annotated[float, Field(gt=1.0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [1.25, 2.0, 4.0]
    )
    min_rate: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.01  # events rarer than this in the baseline: no chart
    interval_s: Annotated[float, Field(gt=0.0)] = 1.0  # how often the summaries are read and the charts updated
    state_dir: str = ".adae-monitor"  # the monitor's state without a repository (with one: DIR/.decider/)


class DemoConfig(BaseModel):
    model_config = _SECTION

    duration_s: float = 60.0
    rate: float = 200.0
    batch: int = 8
    # a feed where corruption dominates and attacks are rare: correction hurts overall (blur), so the
    # decision-maker flips answers to the undefended prediction (README, "What make demo shows"); an
    # attack-heavy mix (--mix clean=0.5,fgsm=0.15,pgd=0.15,noise=0.07,blur=0.07,occlusion=0.06) keeps corrected
    mix: dict[str, float] = Field(
        default_factory=lambda: {"clean": 0.35, "fgsm": 0.05, "pgd": 0.05, "noise": 0.15, "blur": 0.3, "occlusion": 0.1}
    )
    # an incident for the change detectors to find: this share of traffic becomes `incident_kind` from
    # incident_at (a fraction of duration_s) on; share 0: none
    incident_kind: str = "blur"
    incident_share: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    incident_at: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    seed: int = 0
    cache_dir: str = ".adae-cache"
    report_dir: str = "demo-report"
    epochs: int = 30


class Config(BaseSettings):
    """The whole configuration. ``Config()`` alone reads ``ADAE_*`` from the process environment;
    ``load_config`` adds the YAML file and explicit overrides and reports errors in one line."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTING, extra="forbid", case_sensitive=False
    )

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    flagged: FlaggedConfig = Field(default_factory=FlaggedConfig)
    decisions: DecisionsConfig = Field(default_factory=DecisionsConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def redacted(self) -> dict[str, Any]:
        """The config as a dict with secrets replaced, safe to log."""

        def walk(section: dict) -> dict:
            return {
                key: walk(value)
                if isinstance(value, dict)
                else ("***" if value is not None and is_secret(key) else value)
                for key, value in section.items()
            }

        return walk(self.model_dump())


# exactly_once saturation over the previous defaults (3 rounds): linger 0 0.77-0.99, 10 ms 0.98-1.07
EXACTLY_ONCE_LINGER_MS = 10


def load_config(
    path: str | os.PathLike | None = None, environ: dict[str, str] | None = None, overrides: dict | None = None
) -> Config:
    """Read YAML (if given), apply environment (os.environ unless given) then explicit overrides, and
    validate everything."""
    cfg = load(Config, path, dict(os.environ if environ is None else environ), overrides or {})
    _validate(cfg)
    return cfg


def linger_ms(cfg: Config) -> int:
    """The producer's linger: kafka.linger_ms, else the delivery's own default."""
    default = EXACTLY_ONCE_LINGER_MS if cfg.delivery == "exactly_once" else 0
    return default if cfg.kafka.linger_ms is None else cfg.kafka.linger_ms


def input_topics(kafka: KafkaConfig) -> list[str]:
    """The input topics named in the config (none when kafka.input_pattern selects them)."""
    if kafka.input_pattern:
        return []
    return [kafka.input_topic] if isinstance(kafka.input_topic, str) else list(kafka.input_topic)


def validate_topics(kafka: KafkaConfig, summaries: bool = True) -> None:
    """The service never writes to a topic it reads: no feedback loop, and a monitor-only tap leaves the
    tapped platform's topics alone. Derives the shadow and evidence topics where feedback is on, and the
    summary topic where the change detectors are (``summaries``: monitoring.enabled); called again by whoever
    turns feedback on after loading, like the demo."""
    pattern = None
    if kafka.input_pattern:
        try:
            pattern = re.compile(kafka.input_pattern)
        except re.error as exc:
            raise ConfigError(f"config key 'kafka.input_pattern': not a valid regular expression: {exc}") from None
    elif not input_topics(kafka) or not all(input_topics(kafka)):
        raise ConfigError("config key 'kafka.input_topic': name at least one topic (or set kafka.input_pattern)")
    if kafka.feedback_topic and kafka.shadow_topic is None:
        kafka.shadow_topic = f"{kafka.output_topic}-shadow"
    if kafka.feedback_topic and kafka.evidence_topic is None:
        kafka.evidence_topic = f"{kafka.output_topic}-evidence"
    if kafka.summary_topic is None and summaries:
        kafka.summary_topic = f"{kafka.output_topic}-summaries"
    for key in TOPIC_KEYS:
        topic = getattr(kafka, key)
        if topic is None:
            continue
        if topic in input_topics(kafka) or (pattern is not None and pattern.match(topic)):  # as kafka-python matches
            raise ConfigError(
                f"config key 'kafka.{key}': {topic!r} is also read as input; the service never writes "
                "to a topic it reads, and feedback is not a request"
            )
    named = [t for t in written_or_joined_topics(kafka) if t is not None]
    if len(set(named)) != len(named):
        raise ConfigError(f"config keys {', '.join(repr('kafka.' + k) for k in TOPIC_KEYS)}: each needs its own topic")


# every topic the service writes or joins, each its own
TOPIC_KEYS = (
    "output_topic",
    "dead_letter_topic",
    "feedback_topic",
    "flagged_topic",
    "shadow_topic",
    "evidence_topic",
    "summary_topic",
)


def written_or_joined_topics(kafka: KafkaConfig) -> tuple[str | None, ...]:
    return tuple(getattr(kafka, key) for key in TOPIC_KEYS)


def _validate_detector(detector: DetectorConfig) -> None:
    if detector.path and detector.repository:
        raise ConfigError("config keys 'detector.path' and 'detector.repository': set one of them, not both")
    for i, route in enumerate(detector.routes):
        where = f"config key 'detector.routes[{i}]'"
        keys = set(route)
        if "detector" not in keys or len(keys & {"model", "topic"}) != 1 or keys - {"detector", "model", "topic"}:
            raise ConfigError(f"{where}: expected {{detector: NAME, model: NAME}} or {{detector: NAME, topic: REGEX}}")
        if "topic" in route:
            try:
                re.compile(route["topic"])
            except re.error as exc:
                raise ConfigError(f"{where}: topic is not a valid regular expression: {exc}") from None
    if detector.routes and not detector.repository:
        raise ConfigError("config key 'detector.routes': routes choose among the detectors of detector.repository")


def _validate(cfg: Config) -> None:
    """The rules between fields (a single field's range is on the field)."""
    validate_topics(cfg.kafka, cfg.monitoring.enabled)
    _validate_detector(cfg.detector)
    checks = [
        (
            "kafka.delivery_timeout_s",
            cfg.kafka.delivery_timeout_s * 1000 > 2 * linger_ms(cfg) + 2000,
            "must exceed 2 s + 2 x linger_ms",
        ),
        (
            "kafka.transaction_timeout_ms",
            cfg.kafka.transaction_timeout_ms > cfg.kafka.delivery_timeout_s * 1000,
            "must exceed kafka.delivery_timeout_s",
        ),
        (
            "kafka.feedback_topic",
            cfg.kafka.feedback_topic is None or cfg.kafka.publish == "answers",
            "feedback joins the answers on the output topic: it needs kafka.publish 'answers'",
        ),
    ]
    for key, ok, msg in checks:
        if not ok:
            raise ConfigError(f"config key '{key}': {msg}")


def kafka_security_kwargs(kafka: KafkaConfig) -> dict[str, Any]:
    """The SSL/SASL settings passed through to kafka-python clients unchanged (None values left out)."""
    keys = [
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_kerberos_service_name",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_crlfile",
        "ssl_check_hostname",
    ]
    return {key: getattr(kafka, key) for key in keys if getattr(kafka, key) is not None}
