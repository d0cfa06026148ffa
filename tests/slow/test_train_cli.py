"""`adae-stream train` as a real process: fitting, saving and calibrating a detector from the CLI."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import numpy as np
import pytest

from adae_stream import load_detector
from tests.process_helpers import cli


def test_train_cli_fits_and_saves(tmp_path, digits_setup):
    clf_path = tmp_path / "clf.keras"
    digits_setup["clf"].save(clf_path)
    np.save(tmp_path / "train.npy", digits_setup["Xtr"][:400])
    out = cli(
        f"train --model {clf_path} --data {tmp_path / 'train.npy'} --ae-preset conv --epochs 2 --threshold-perc 90 "
        f"--val-split 0 --precision mixed_bfloat16 --out {tmp_path / 'det'} --quiet"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    det = load_detector(tmp_path / "det")
    assert det.precision == "mixed_bfloat16"  # and the threshold below was inferred on bfloat16 scores
    scores = det.score(digits_setup["Xtr"][:400])
    assert det.threshold == pytest.approx(float(np.percentile(scores, 90)), rel=1e-5)
    assert f"saved detector to {tmp_path / 'det'}" in out.stdout
    np.save(tmp_path / "wrong.npy", np.zeros((10, 5), np.float32))
    wrong = cli(f"train --model {clf_path} --data {tmp_path / 'wrong.npy'} --out {tmp_path / 'y'}")
    assert wrong.returncode == 2 and "expects (8, 8, 1)" in wrong.stderr


def test_train_cli_calibrates_to_a_target_rate_on_held_out_data(tmp_path, digits_setup):
    clf_path = tmp_path / "clf.keras"
    digits_setup["clf"].save(clf_path)
    X = np.concatenate([digits_setup["Xtr"], digits_setup["Xte"]])
    np.save(tmp_path / "train.npy", X)
    np.save(tmp_path / "labels.npy", np.concatenate([digits_setup["ytr"], digits_setup["yte"]]))
    small = cli(
        f"train --model {clf_path} --data {tmp_path / 'train.npy'} --target-fpr 0.01 --out {tmp_path / 'no'} --quiet"
    )
    assert small.returncode == 2 and "needs at least 1000 held-out clean instances" in small.stderr  # 20 % of 1797
    out = cli(
        f"train --model {clf_path} --data {tmp_path / 'train.npy'} --ae-preset conv --epochs 40 --patience 2 "
        f"--target-fpr 0.05 --labels {tmp_path / 'labels.npy'} --out {tmp_path / 'det'} --quiet"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    det = load_detector(tmp_path / "det")
    cal = det.meta["calibration"]
    assert cal["target_fpr"] == 0.05 and cal["held_out"] == int(len(X) * 0.2) and cal["expected_fpr"] <= 0.05
    assert cal["expected_fpr"] < cal["fpr_upper_bound"] < 0.1 and det.threshold == pytest.approx(cal["threshold"])
    held_out = X[np.random.default_rng(0).permutation(len(X))[: cal["held_out"]]]  # the CLI's split
    assert float((det.score(held_out) > det.threshold).mean()) == pytest.approx(cal["expected_fpr"], abs=1e-9)
    assert "false-positive rate of 0.05" in out.stdout
    # the card: next to the detector, the same numbers in detector.json
    card = det.meta["card"]
    kinds = {(r["kind"], r["eps"]): r for r in card["rows"]}
    assert {("clean", None), ("fgsm", 0.1), ("pgd", 0.2), ("noise", 0.3), ("blur", None)} <= set(kinds)
    assert card["labels"] == "true" and kinds[("clean", None)]["acc_no_defense"] > 0.8
    assert kinds[("fgsm", 0.2)]["acc_no_defense"] < kinds[("clean", None)]["acc_no_defense"]  # the attack works
    assert kinds[("pgd", 0.2)]["auroc"] > 0.5
    md = (tmp_path / "det" / "card.md").read_text()
    assert f"{cal['expected_fpr']:.2%} of them flagged" in md and "| pgd | 0.2 |" in md
    assert "](card.svg)" in md
    figure = ElementTree.parse(tmp_path / "det" / "card.svg").getroot()  # well-formed, no plotting library
    svg = "{http://www.w3.org/2000/svg}"
    assert len(figure.findall(f"{svg}polyline")) >= 1  # the training curve
    assert len(figure.findall(f"{svg}rect")) == 1 + 2 * 60  # background + two histograms of 60 bins
    assert {t.text for t in figure.findall(f"{svg}text")} >= {"Training curve", "Score distributions", "threshold"}
    assert (
        det.meta["identity"]["detector_id"]
        == json.loads((tmp_path / "det" / "detector.json").read_text())["detector_id"]
    )
