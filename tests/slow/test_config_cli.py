"""Config errors as the operator sees them: one line from the real CLI process, exit status 2."""

from __future__ import annotations

import subprocess
import sys


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_cli_reports_one_clear_line(tmp_path):
    p = write(tmp_path, "kafka:\n  partitons: 3\n")
    out = subprocess.run(
        [sys.executable, "-m", "adae_stream.cli", "run", "--config", str(p)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "adae-stream: config key 'kafka.partitons' is unknown (known keys in kafka: "
        + out.stderr.split("known keys in kafka: ")[1].strip()
    ]


def test_cli_missing_detector(tmp_path):
    p = write(tmp_path, "detector:\n  path: " + str(tmp_path / "none") + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "adae_stream.cli", "run", "--config", str(p)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "detector.json is missing" in out.stderr.strip().splitlines()[-1]


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


def test_cli_starts_past_config_with_kubernetes_variables(tmp_path):
    """The shipped deployment used to exit 2 with "config key 'stream_port' is unknown"."""
    import os

    p = write(tmp_path, "detector:\n  path: " + str(tmp_path / "none") + "\n")
    env = {**os.environ, **KUBERNETES_SERVICE_ENV}
    out = subprocess.run(
        [sys.executable, "-m", "adae_stream.cli", "run", "--config", str(p)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "unknown" not in out.stderr
    assert "detector.json is missing" in out.stderr.strip().splitlines()[-1]  # got as far as loading the detector
