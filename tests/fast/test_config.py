"""Config: YAML + env overrides, validation errors that name the key, secrets, Kafka pass-through."""

from __future__ import annotations

from pathlib import Path

import pytest

from adae_stream.config import EXACTLY_ONCE_LINGER_MS, kafka_security_kwargs, linger_ms, load_config
from adae_stream.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_repo_config_yaml_is_valid():
    cfg = load_config(ROOT / "config.yaml", environ={})
    assert cfg.kafka.bootstrap_servers == "embedded"
    assert cfg.metrics.host == "127.0.0.1"  # metrics bind to loopback unless configured otherwise


def test_defaults_and_env_overrides(tmp_path):
    p = write(tmp_path, "kafka:\n  input_topic: a\nbatching:\n  max_batch_size: 64\n")
    cfg = load_config(
        p,
        environ={
            "ADAE_KAFKA__INPUT_TOPIC": "b",
            "ADAE_BATCHING__MAX_BATCH_DELAY_MS": "7",
            "ADAE_METRICS__PORT": "9200",
            "OTHER": "x",
        },
    )
    assert cfg.kafka.input_topic == "b"
    assert cfg.batching.max_batch_size == 64
    assert cfg.batching.max_batch_delay_ms == 7.0
    assert cfg.metrics.port == 9200
    assert cfg.kafka.group_id == "adae-stream"


def test_the_defaults_never_make_a_lone_request_wait():
    """Issue 40: no fixed wait by default. The producer lingers only under exactly_once, where the commit
    flushes it anyway; a set kafka.linger_ms is kept under either delivery."""
    alo = load_config(None, environ={})
    eos = load_config(None, environ={}, overrides={"delivery": "exactly_once"})
    assert alo.batching.dispatch_when_idle and alo.kafka.commit_when_idle
    assert (linger_ms(alo), linger_ms(eos)) == (0, EXACTLY_ONCE_LINGER_MS)
    for delivery in ("at_least_once", "exactly_once"):
        set_ = load_config(None, environ={}, overrides={"delivery": delivery, "kafka": {"linger_ms": 3}})
        assert linger_ms(set_) == 3


def test_scoring_compiles_per_bucket_by_default_and_either_form_can_be_forced():
    """Issue 40: jit_compile auto (XLA per bucket where warm-up measures it faster) unless told."""
    assert load_config(None, environ={}).detector.jit_compile == "auto"
    for text, value in (("auto", "auto"), ("true", True), ("false", False)):
        assert load_config(None, environ={"ADAE_DETECTOR__JIT_COMPILE": text}).detector.jit_compile == value


@pytest.mark.parametrize(
    "text, env, key",
    [
        ("kafka:\n  input_topik: a\n", {}, "kafka.input_topik"),
        ("kafak:\n  a: 1\n", {}, "kafak"),
        ("batching:\n  max_batch_size: many\n", {}, "batching.max_batch_size"),
        ("batching:\n  max_batch_size: 0\n", {}, "batching.max_batch_size"),
        ("kafka:\n  create_topics: 3\n", {}, "kafka.create_topics"),
        ("delivery: sometimes\n", {}, "delivery"),
        ("batching:\n  bucket_sizes: [1, x]\n", {}, "batching.bucket_sizes[1]"),
        ("", {"ADAE_METRICS__PORT": "http"}, "metrics.port"),
        ("", {"ADAE_KAFKA__CREATE_TOPICS": "3"}, "kafka.create_topics"),
        ("", {"ADAE_KAFKA__NOPE": "1"}, "kafka.nope"),
        ("kafka: 5\n", {}, "kafka"),
    ],
)
def test_errors_name_the_key(tmp_path, text, env, key):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, text), environ=env)
    assert f"'{key}'" in str(ei.value)
    assert "\n" not in str(ei.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "kafka: [unclosed\n"), environ={})
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_yaml_is_safe_loaded(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "kafka: !!python/object/apply:os.system ['echo pwned']\n"), environ={})


def test_ssl_and_sasl_pass_through_and_secrets_redacted(tmp_path):
    p = write(
        tmp_path,
        """
kafka:
  bootstrap_servers: broker:9093
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_plain_username: svc
  sasl_plain_password: hunter2
  ssl_cafile: /etc/ca.pem
  ssl_certfile: /etc/cert.pem
  ssl_keyfile: /etc/key.pem
  ssl_password: keypass
  ssl_check_hostname: false
""",
    )
    cfg = load_config(p, environ={})
    kw = kafka_security_kwargs(cfg.kafka)
    assert kw == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "hunter2",
        "ssl_cafile": "/etc/ca.pem",
        "ssl_certfile": "/etc/cert.pem",
        "ssl_keyfile": "/etc/key.pem",
        "ssl_password": "keypass",
        "ssl_check_hostname": False,
    }
    # kafka-python accepts every one of them (no unknown-config error building a client config)
    from kafka import KafkaConsumer, KafkaProducer

    for cls in (KafkaConsumer, KafkaProducer):
        assert set(kw) <= set(cls.DEFAULT_CONFIG)
    red = str(cfg.redacted())
    assert "hunter2" not in red and "keypass" not in red and "/etc/key.pem" in red


def test_secret_values_never_in_errors(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, "kafka:\n  sasl_plain_password: 987654321\n"), environ={})
    assert "sasl_plain_password" in str(ei.value) and "987654321" not in str(ei.value)


# What the kubelet injects into every pod of a namespace holding a Service named adae-stream (port 9108,
# named metrics), plus the Docker-link style variables it still sets; none of them is our config.
KUBERNETES_SERVICE_ENV = {
    "ADAE_STREAM_SERVICE_HOST": "10.96.12.34",
    "ADAE_STREAM_SERVICE_PORT": "9108",
    "ADAE_STREAM_SERVICE_PORT_METRICS": "9108",
    "ADAE_STREAM_PORT": "tcp://10.96.12.34:9108",
    "ADAE_STREAM_PORT_9108_TCP": "tcp://10.96.12.34:9108",
    "ADAE_STREAM_PORT_9108_TCP_PROTO": "tcp",
    "ADAE_STREAM_PORT_9108_TCP_PORT": "9108",
    "ADAE_STREAM_PORT_9108_TCP_ADDR": "10.96.12.34",
    "ADAE_KAFKA_SERVICE_HOST": "10.96.0.9",  # a Service named adae-kafka: one underscore, not a section
    "ADAE_CONFIG": "/etc/adae/config.yaml",  # read by the CLI, not a key
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
}


def test_kubernetes_service_variables_are_not_config(tmp_path):
    cfg = load_config(ROOT / "config.yaml", environ={**KUBERNETES_SERVICE_ENV, "ADAE_KAFKA__GROUP_ID": "g"})
    assert cfg.kafka.group_id == "g"
    assert cfg.metrics.port == 9108 and cfg.kafka.bootstrap_servers == "embedded"


@pytest.mark.parametrize("secret", ["123456", "null", "", "true", "~", "[a, b]", "0x1F", "  spaced  ", "#hash", "a: b"])
def test_string_fields_from_the_environment_are_taken_verbatim(secret):
    cfg = load_config(None, environ={"ADAE_KAFKA__SASL_PLAIN_PASSWORD": secret, "ADAE_KAFKA__GROUP_ID": "007"})
    assert cfg.kafka.sasl_plain_password == secret
    assert cfg.kafka.group_id == "007"


def test_in_yaml_a_number_is_no_string_but_the_same_digits_from_the_environment_are(tmp_path):
    with pytest.raises(ConfigError, match=r"'kafka.sasl_plain_password': Input should be a valid string \(got int"):
        load_config(write(tmp_path, "kafka:\n  sasl_plain_password: 123456\n"), environ={})
    quoted = load_config(write(tmp_path, 'kafka:\n  sasl_plain_password: "123456"\n'), environ={})
    assert quoted.kafka.sasl_plain_password == "123456"
    from_env = load_config(None, environ={"ADAE_KAFKA__SASL_PLAIN_PASSWORD": "123456"})
    assert from_env.kafka.sasl_plain_password == "123456"


def test_typed_fields_from_the_environment_are_parsed():
    env = {
        "ADAE_KAFKA__CREATE_TOPICS": "false",
        "ADAE_BATCHING__BUCKET_SIZES": "[1, 8]",
        "ADAE_KAFKA__COMPRESSION_TYPE": "zstd",
        "ADAE_DELIVERY": "exactly_once",
        "ADAE_LOG_LEVEL": "DEBUG",
        "ADAE_DEMO__MIX__CLEAN": "0.9",
    }
    cfg = load_config(None, environ=env)
    assert (
        cfg.kafka.create_topics is False
        and cfg.batching.bucket_sizes == [1, 8]
        and cfg.kafka.compression_type == "zstd"
    )
    assert cfg.delivery == "exactly_once" and cfg.log_level == "DEBUG" and cfg.demo.mix["clean"] == 0.9


@pytest.mark.parametrize(
    "env, key",
    [
        ({"ADAE_KAFKA__INPUT_TOPK": "x"}, "kafka.input_topk"),
        ({"ADAE_KAFKA__SECURITY_PROTOCOL": "plaintext"}, "kafka.security_protocol"),
        ({"ADAE_DELIVERY": "never"}, "delivery"),
        ({"ADAE_DETECTOR__JIT_COMPILE": "fastest"}, "detector.jit_compile"),
    ],
)
def test_bad_values_in_known_sections_still_fail_naming_the_key(env, key):
    with pytest.raises(ConfigError) as ei:
        load_config(None, environ=env)
    assert f"'{key}'" in str(ei.value)


@pytest.mark.parametrize(
    "overrides, key, says",
    [
        ({"metrics": {"port": 70000}}, "metrics.port", "less than or equal to 65535"),
        ({"flagged": {"sample_rate": 1.5}}, "flagged.sample_rate", "less than or equal to 1"),
        ({"kafka": {"max_message_bytes": 10}}, "kafka.max_message_bytes", "greater than or equal to 1024"),
        ({"batching": {"bucket_sizes": [4, 0]}}, "batching.bucket_sizes[1]", "greater than or equal to 1"),
        ({"batching": {"bucket_sizes": []}}, "batching.bucket_sizes", "at least 1 item"),
        ({"detector": {"routes": [{"detector": 3}]}}, "detector.routes[0].detector", "valid string"),
        ({"kafka": {"linger_ms": 20000}}, "kafka.delivery_timeout_s", "must exceed 2 s + 2 x linger_ms"),
    ],
)
def test_ranges_and_rules_name_the_key(overrides, key, says):
    """A field's range is on the field; a rule between fields names the one it constrains."""
    with pytest.raises(ConfigError) as ei:
        load_config(None, environ={}, overrides=overrides)
    assert str(ei.value).startswith(f"config key '{key}'") and says in str(ei.value)


def test_lists_from_the_environment_are_json():
    cfg = load_config(None, environ={"ADAE_KAFKA__INPUT_TOPIC": '["in-a", "in-b"]'})
    assert cfg.kafka.input_topic == ["in-a", "in-b"]
