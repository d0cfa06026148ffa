"""The command-line tools around the pipeline: train, produce, tail (real processes, real broker)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adae_stream import load_detector
from tests.kafka_helpers import collect, make_config, start_pipeline

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adae_stream.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_train_cli_fits_and_saves(tmp_path, digits_setup):
    clf_path = tmp_path / "clf.keras"
    digits_setup["clf"].save(clf_path)
    np.save(tmp_path / "train.npy", digits_setup["Xtr"][:400])
    out = cli("train", "--model", str(clf_path), "--data", str(tmp_path / "train.npy"), "--ae-preset", "conv", "--epochs", "2",
              "--threshold-perc", "90", "--precision", "mixed_bfloat16", "--out", str(tmp_path / "det"), "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    det = load_detector(tmp_path / "det")
    assert det.precision == "mixed_bfloat16"  # and the threshold below was inferred on bfloat16 scores
    scores = det.score(digits_setup["Xtr"][:400])
    assert det.threshold == pytest.approx(float(np.percentile(scores, 90)), rel=1e-5)
    assert f"saved detector to {tmp_path / 'det'}" in out.stdout
    np.save(tmp_path / "wrong.npy", np.zeros((10, 5), np.float32))
    wrong = cli("train", "--model", str(clf_path), "--data", str(tmp_path / "wrong.npy"), "--out", str(tmp_path / "y"))
    assert wrong.returncode == 2 and "expects (8, 8, 1)" in wrong.stderr


@pytest.mark.broker
def test_produce_and_tail(broker, tmp_path, digits_setup, digits_scorer, digits_detector_path):
    cfg = make_config(broker.bootstrap, digits_detector_path)
    np.save(tmp_path / "x.npy", digits_setup["Xte"][:40])
    run = start_pipeline(cfg, digits_scorer)
    try:
        for fmt in ("v2", "v1", "npy"):
            out = cli("produce", "--file", str(tmp_path / "x.npy"), "--format", fmt, "--batch", "8", "--rate", "50",
                      "--bootstrap", broker.bootstrap, "--topic", cfg.kafka.input_topic)
            assert out.returncode == 0, out.stderr[-2000:]
            assert f"produced 5 requests (40 instances, {fmt})" in out.stdout
        assert len(collect(broker.bootstrap, cfg.kafka.output_topic, 15, timeout_s=60)) == 15
        tail = cli("tail", "--bootstrap", broker.bootstrap, "--topic", cfg.kafka.output_topic, "--from-beginning", "--max", "15", "--timeout", "20")
    finally:
        run.stop()
    assert tail.returncode == 0, tail.stderr[-2000:]
    lines = [line for line in tail.stdout.splitlines() if line.startswith("req-")]
    assert len(lines) == 15
    assert all("n=8" in line and "flagged=" in line and "corrected=[" in line for line in lines)


def test_produce_refuses_embedded(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    out = cli("produce", "--file", str(tmp_path / "x.npy"), "--config", str(ROOT / "config.yaml"))
    assert out.returncode == 2 and "--bootstrap" in out.stderr
