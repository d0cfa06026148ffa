"""Config errors as the operator sees them: one line from the real CLI process, exit status 2."""

from __future__ import annotations

import subprocess
import sys

from tests.fast.test_config import KUBERNETES_SERVICE_ENV, write
from tests.process_helpers import cli


def test_cli_reports_one_clear_line(tmp_path):
    p = write(tmp_path, "kafka:\n  partitons: 3\n")
    out = cli(f"run --config {p}", timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "adae-stream: config key 'kafka.partitons' is unknown (known keys in kafka: "
        + out.stderr.split("known keys in kafka: ")[1].strip()
    ]


def test_cli_missing_detector(tmp_path):
    p = write(tmp_path, "detector:\n  path: " + str(tmp_path / "none") + "\n")
    out = cli(f"run --config {p}", timeout=120)
    assert out.returncode == 2
    assert "detector.json is missing" in out.stderr.strip().splitlines()[-1]


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
