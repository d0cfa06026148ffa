"""A PyTorch classifier protected end to end on a real broker: trained from the CLI on the torch backend,
served from a repository by a real `adae-stream run` process (detector.backend: torch), answers equal to
the detector's offline correct(), and a new version taken by hot swap. Runs in .venv-torch (`make test`)."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest

from adae_stream import load_detector, save_detector
from adae_stream.codecs import decode_response
from adae_stream.detector.identity import detector_identity
from tests.answer_checks import assert_answers_match_detector, score_bound
from tests.kafka_helpers import collect, make_config, produce_requests
from tests.process_helpers import ROOT, PipelineProcess
from tests.torch_models import export

pytestmark = pytest.mark.broker


def _answers(bootstrap, topic, expected) -> dict[str, tuple[dict, str]]:
    records = collect(bootstrap, topic, expected, timeout_s=90)
    out = {}
    for rec in records:
        answer = decode_response(rec.value, rec.headers)
        assert answer["id"] not in out, f"{answer['id']} answered twice"
        out[answer["id"]] = (answer, dict(rec.headers)["adae-detector-id"].decode())
    return out


def _threshold_between_scores(det, x) -> float:
    """A threshold at the middle of x's scores, between two further apart than the float32 bound."""
    scores = np.sort(det.score(x).astype(np.float64))
    i = len(scores) // 2
    while not scores[i + 1] - scores[i] > 4 * score_bound(scores[i + 1]):
        i += 1
    return float((scores[i] + scores[i + 1]) / 2)


def test_a_pytorch_classifier_is_trained_from_the_cli_served_and_hot_swapped(broker, digits_torch, tmp_path):
    x, y = digits_torch["x"], digits_torch["y"]
    clf_path = export(digits_torch["cnn_logits"], tmp_path / "clf.pt2")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    repo = tmp_path / "repo"
    repo.mkdir()
    train = subprocess.run(
        [sys.executable, "-m", "adae_stream.cli", "train", "--backend", "torch", "--model", str(clf_path), "--logits",
         "--data", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "--repository", str(repo),
         "--name", "digits", "--epochs", "8", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    assert "epochs on torch" in train.stdout
    v1 = load_detector(repo / "digits" / "1")
    assert v1.meta["card"]["labels"] == "true"

    cfg = make_config(
        broker.bootstrap,
        "unused",
        detector={"path": None, "repository": str(repo), "poll_s": 3600, "backend": "torch",
                  "routes": [{"detector": "digits", "topic": ".*"}]},
        batching={"max_batch_size": 32, "max_batch_delay_ms": 5},
    )  # fmt: skip
    proc = PipelineProcess(cfg, tmp_path, "torch").start()
    try:
        assert proc.wait_log("partitions assigned", timeout_s=180), proc.text()[-3000:]
        assert "torch 2." in proc.text()  # the runtime it logs at start
        noisy = np.clip(x[:120] + np.random.default_rng(3).normal(0, 0.4, x[:120].shape), 0, 1).astype(np.float32)
        first = produce_requests(broker.bootstrap, cfg.kafka.input_topic, np.concatenate([x[200:320], noisy]), "v2", 6)
        answers = _answers(broker.bootstrap, cfg.kafka.output_topic, len(first))
        assert set(answers) == set(first)
        for rid, (answer, detector_id) in answers.items():
            assert detector_id == detector_identity(v1)["detector_id"]
            assert_answers_match_detector(answer, v1, first[rid])
        assert 0 < np.mean([a["is_adversarial"].mean() for a, _ in answers.values()]) < 1

        v2 = load_detector(repo / "digits" / "1")
        v2.threshold = _threshold_between_scores(v1, noisy)
        save_detector(v2, repo / "digits" / "2")
        v2 = load_detector(repo / "digits" / "2")
        proc.signal(signal.SIGHUP)
        for line in ("detector digits: version 2 serves", "detectors changed: digits: version 2"):
            assert proc.wait_log(line, timeout_s=120), proc.text()[-3000:]
        second = produce_requests(broker.bootstrap, cfg.kafka.input_topic, noisy, "v2", 6, prefix="after")
        answers = _answers(broker.bootstrap, cfg.kafka.output_topic, len(first) + len(second))
        for rid in second:
            answer, detector_id = answers[rid]
            assert detector_id == detector_identity(v2)["detector_id"] != detector_identity(v1)["detector_id"]
            assert_answers_match_detector(answer, v2, second[rid])
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not collect(broker.bootstrap, cfg.kafka.dead_letter_topic, 1, timeout_s=3)
    finally:
        proc.cleanup()
