"""Configuration: YAML (safe_load) + ``ADAE_<SECTION>__<KEY>`` environment overrides, typed and validated.

Every problem becomes one ConfigError line that names the key, raised at start-up, never mid-stream.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from adae_stream.errors import ConfigError
from adae_stream.scoring import buckets_up_to
from adae_stream.typed_settings import build, env_overrides, is_secret, merge

log = logging.getLogger(__name__)


@dataclass
class KafkaConfig:
    bootstrap_servers: str = "embedded"
    input_topic: str | list[str] = "adae-requests"  # one topic or a list (a tap may read several)
    input_pattern: str | None = None  # a regex of topics to read instead (e.g. ^seldon\.prod\.model\..*\.inputs$)
    # answers: answer every request. Monitor-only taps of a platform's traffic: flagged publishes only
    # the flagged instances of a request (with their instance_index), nothing publishes no answer at all;
    # both export every metric and never write to the input topics.
    publish: Literal["answers", "flagged", "nothing"] = "answers"
    feedback_topic: str | None = None  # ground-truth labels of earlier requests (unset: no feedback loop)
    flagged_topic: str | None = None  # every request with a flagged instance, for review (unset: off)
    output_topic: str = "adae-predictions"
    dead_letter_topic: str = "adae-dead-letter"
    group_id: str = "adae-stream"
    client_id: str = "adae-stream"
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
    max_message_bytes: int = 8 * 1024 * 1024
    create_topics: bool = True
    partitions: int = 4
    replication_factor: int = 1
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 1000
    fetch_max_wait_ms: int = 100
    max_poll_records: int = 500
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    linger_ms: int = 10
    connect_timeout_s: float = 60.0
    delivery_timeout_s: float = 30.0
    commit_interval_ms: int = 200
    # exactly_once: a name unique to this replica that survives its restarts (a StatefulSet pod name), so
    # a restart fences its previous incarnation and aborts that one's open transaction at once; unset, it
    # is unique per process and a crashed process's transaction blocks read_committed readers of the
    # output until transaction_timeout_ms
    transactional_id: str | None = None
    transaction_timeout_ms: int = 60000


@dataclass
class DetectorConfig:
    path: str | None = None  # one detector that serves every record
    # or a repository of many, DIR/<name>/<version>/ (detector/repository.py), routed by model name
    repository: str | None = None
    poll_s: float = 10.0  # how often the repository is read again (and on SIGHUP)
    routes: list[dict[str, str]] = field(default_factory=list)  # {detector, model} or {detector, topic: REGEX}
    max_detectors: int = 32  # bounds the per-detector metric series
    return_all_predictions: bool = True
    return_instance_score: bool = True
    model_name: str = "adae"
    jit_compile: bool = False


DEFAULT_MAX_BATCH = 256


@dataclass
class BatchingConfig:
    max_batch_size: int = DEFAULT_MAX_BATCH
    max_batch_delay_ms: float = 10.0
    bucket_sizes: list[int] = field(default_factory=lambda: buckets_up_to(DEFAULT_MAX_BATCH))


@dataclass
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9108
    window_size: int = 2000
    drift_interval_s: float = 5.0
    max_class_labels: int = 20


@dataclass
class FeedbackConfig:
    window_s: float = 3600.0  # how long an answer waits for its labels (and how far back a restart reads)
    max_instances: int = 1_000_000  # memory bound of the join: oldest answers go first


@dataclass
class FlaggedConfig:
    sample_rate: float = 1.0  # share of requests with a flagged instance captured (by request id: stable)
    max_instances: int = 256  # flagged instances per captured record; the rest are counted, not sent


@dataclass
class DemoConfig:
    duration_s: float = 60.0
    rate: float = 200.0
    batch: int = 8
    mix: dict[str, float] = field(
        default_factory=lambda: {
            "clean": 0.5,
            "fgsm": 0.15,
            "pgd": 0.15,
            "noise": 0.07,
            "blur": 0.07,
            "occlusion": 0.06,
        }
    )
    seed: int = 0
    cache_dir: str = ".adae-cache"
    report_dir: str = "demo-report"
    epochs: int = 30


@dataclass
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    flagged: FlaggedConfig = field(default_factory=FlaggedConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
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

        return walk(dataclasses.asdict(self))


def load_config(
    path: str | os.PathLike | None = None, environ: dict[str, str] | None = None, overrides: dict | None = None
) -> Config:
    """Read YAML (if given), apply environment then explicit overrides, validate everything."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"config file {p}: {exc.strerror or exc}") from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p}: invalid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p}: top level must be a mapping of sections")
    data = merge(data, env_overrides(Config, dict(os.environ if environ is None else environ)))
    if overrides:
        data = merge(data, overrides)
    cfg = build(Config, data, "")
    _validate_ranges(cfg)
    return cfg


def input_topics(kafka: KafkaConfig) -> list[str]:
    """The input topics named in the config (none when kafka.input_pattern selects them)."""
    if kafka.input_pattern:
        return []
    return [kafka.input_topic] if isinstance(kafka.input_topic, str) else list(kafka.input_topic)


def _validate_topics(kafka: KafkaConfig) -> None:
    """The service never writes to a topic it reads: no feedback loop, and a monitor-only tap leaves the
    tapped platform's topics alone."""
    pattern = None
    if kafka.input_pattern:
        try:
            pattern = re.compile(kafka.input_pattern)
        except re.error as exc:
            raise ConfigError(f"config key 'kafka.input_pattern': not a valid regular expression: {exc}") from None
    elif not input_topics(kafka) or not all(input_topics(kafka)):
        raise ConfigError("config key 'kafka.input_topic': name at least one topic (or set kafka.input_pattern)")
    for key in ("output_topic", "dead_letter_topic", "feedback_topic", "flagged_topic"):
        topic = getattr(kafka, key)
        if topic is None:
            continue
        if topic in input_topics(kafka) or (pattern is not None and pattern.match(topic)):  # as kafka-python matches
            raise ConfigError(
                f"config key 'kafka.{key}': {topic!r} is also read as input; the service never writes "
                "to a topic it reads, and feedback is not a request"
            )
    named = [
        t
        for t in (kafka.output_topic, kafka.dead_letter_topic, kafka.feedback_topic, kafka.flagged_topic)
        if t is not None
    ]
    if len(set(named)) != len(named):
        raise ConfigError(
            "config keys 'kafka.output_topic', 'dead_letter_topic', 'feedback_topic', 'flagged_topic': "
            "each needs its own topic"
        )


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


def _validate_ranges(cfg: Config) -> None:
    _validate_topics(cfg.kafka)
    _validate_detector(cfg.detector)
    checks = [
        ("kafka.max_message_bytes", cfg.kafka.max_message_bytes >= 1024, "must be >= 1024"),
        ("kafka.partitions", cfg.kafka.partitions >= 1, "must be >= 1"),
        ("kafka.connect_timeout_s", cfg.kafka.connect_timeout_s > 0, "must be > 0"),
        (
            "kafka.delivery_timeout_s",
            cfg.kafka.delivery_timeout_s * 1000 > 2 * cfg.kafka.linger_ms + 2000,
            "must exceed 2 s + 2 x linger_ms",
        ),
        (
            "kafka.transaction_timeout_ms",
            cfg.kafka.transaction_timeout_ms > cfg.kafka.delivery_timeout_s * 1000,
            "must exceed kafka.delivery_timeout_s",
        ),
        ("detector.poll_s", cfg.detector.poll_s > 0, "must be > 0"),
        ("detector.max_detectors", cfg.detector.max_detectors >= 1, "must be >= 1"),
        ("batching.max_batch_size", cfg.batching.max_batch_size >= 1, "must be >= 1"),
        ("batching.max_batch_delay_ms", cfg.batching.max_batch_delay_ms >= 0, "must be >= 0"),
        (
            "batching.bucket_sizes",
            bool(cfg.batching.bucket_sizes) and min(cfg.batching.bucket_sizes) >= 1,
            "must be a non-empty list of positive sizes",
        ),
        ("metrics.port", 0 <= cfg.metrics.port <= 65535, "must be a TCP port"),
        ("metrics.window_size", cfg.metrics.window_size >= 10, "must be >= 10"),
        ("feedback.window_s", cfg.feedback.window_s > 0, "must be > 0"),
        ("feedback.max_instances", cfg.feedback.max_instances >= 1, "must be >= 1"),
        ("flagged.sample_rate", 0.0 <= cfg.flagged.sample_rate <= 1.0, "must be between 0 and 1"),
        ("flagged.max_instances", cfg.flagged.max_instances >= 1, "must be >= 1"),
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
