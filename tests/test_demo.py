"""The README's first command, run end to end in a short mode, and the demo's cache behaviour."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_first_command() -> str:
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    commands = [
        line.split("#")[0].strip()
        for b in blocks
        for line in b.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return commands[0]


def test_readme_first_command_is_make_demo():
    assert readme_first_command() == "make demo"


@pytest.mark.broker
def test_demo_end_to_end_short_mode(tmp_path):
    args = (
        f"--duration 10 --rate 30 --port 0 --epochs 10 --seed 3 --cache-dir {tmp_path / 'cache'} "
        f"--report-dir {tmp_path / 'report'}"
    )
    cmd = [*shlex.split(readme_first_command()), f"ARGS={args}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = tmp_path / "report"
    for name in ("report.md", "scores.png", "accuracy.png", "summary.json"):
        assert (report / name).stat().st_size > 0, name
    assert str(report / "report.md") in out.stdout
    summary = json.loads((report / "summary.json").read_text())
    delivery = summary["delivery"]
    assert delivery["produced"] > 100
    assert delivery["answered"] == delivery["produced"] and delivery["missing"] == 0 and delivery["duplicates"] == 0
    kinds = {k["kind"]: k for k in summary["kinds"]}
    assert {"clean", "fgsm", "pgd"} <= set(kinds)
    clean = kinds["clean"]["flag_rate"]
    for adv in ("fgsm", "pgd"):
        assert kinds[adv]["flag_rate"] > max(3 * clean, clean + 0.2), (adv, kinds[adv]["flag_rate"], clean)
        assert kinds[adv]["acc_corrected"] > kinds[adv]["acc_no_defense"] + 0.05, kinds[adv]
    assert kinds["clean"]["acc_corrected"] > 0.85
    md = (report / "report.md").read_text()
    assert "| fgsm |" in md and "AUROC" in md
    # the loop closed: labels sent as feedback (some lost, some duplicated) are what the service counted
    live, sent = summary["run"]["live_accuracy_from_metrics"], summary["run"]["feedback_sent"]
    assert sent["lost"] > 0 and sent["sent"] > 0
    assert (
        live["labelled_instances"] == (sent["sent"] - sent["duplicated"]) * 8
    )  # 8 instances a request; duplicates once
    assert all(0 < live[p] <= 1 for p in ("no_defense", "defense", "corrected"))
    assert "Live accuracy from the feedback loop" in md


@pytest.mark.slow  # it trains a detector (~15 s): no broker, but too long for make test-fast
def test_corrupt_cache_is_rebuilt(tmp_path):
    from adae_stream.demo.detector_cache import cache_key, load_or_train

    entry = tmp_path / f"digits-{cache_key(1, 0)}"
    entry.mkdir(parents=True)
    (entry / "detector.json").write_text("{ corrupt")
    det, path, cached = load_or_train(tmp_path, epochs=1, seed=0)
    assert not cached and path == entry and det.threshold is not None
    det2, _, cached2 = load_or_train(tmp_path, epochs=1, seed=0)
    assert cached2 and det2.threshold == det.threshold
