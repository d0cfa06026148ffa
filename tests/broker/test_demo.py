"""The README's first command, run end to end in a short mode on the embedded broker."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from tests.process_helpers import readme_first_command

ROOT = Path(__file__).resolve().parents[2]


def test_demo_end_to_end_short_mode(tmp_path):
    args = (
        f"--duration 10 --rate 100 --port 0 --epochs 10 --seed 3 --cache-dir {tmp_path / 'cache'} "
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
    # the default traffic is corruption-heavy: correction hurts, and the answers flip to the undefended
    # prediction on the evidence (about 600 discordant pairs at 0.58 : 0.42 decide; 10 s at 100 requests/s
    # label about 7200 instances, of which about 13 % are discordant)
    # (one fresh-clone run in four here ended with no decision at all, where the others decided at 4-5 s on
    # e-values of 113-252 against 80: the demo's own log, which says why, comes with the failure)
    assert len(summary["run"]["decisions"]) == 1, out.stdout[-4000:] + out.stderr[-6000:]
    (decision,) = summary["run"]["decisions"]
    assert decision["decision"] == "publish_no_defense" and decision["c"] > decision["b"]
    assert decision["e_values"]["corrected_worse"] >= 2 / decision["alpha"]
    published = summary["run"]["published"]
    assert [p["published"] for p in published] == ["corrected", "no_defense"]
    # times are arrivals at the demo's reader: answers of different output partitions come in separate fetches,
    # up to a fetch wait (100 ms) and a poll (200 ms) apart, so the last corrected answer may arrive just after
    # the first no_defense one (a fresh-clone run saw 0.5 ms); the switch itself is once (the two rows above)
    assert published[0]["to_s"] <= published[1]["from_s"] + 0.5 and published[1]["instances"] > 0
    assert "publish_no_defense" in md and "| no_defense |" in md
    policy = (report / "repository" / "digits" / "policy.yaml").read_text()
    assert "publish: no_defense" in policy and "corrected_worse" in policy
