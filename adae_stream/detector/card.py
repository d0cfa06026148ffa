"""The detector card: what an operator should know before shipping a detector, written next to it.

Markdown (card.md) and a figure (card.svg, card_figure.py): the training curve; the score distributions of training data
and of held-out clean data; the threshold with the false-positive rate to expect and its upper bound;
and, for attacks generated against the classifier on held-out data (FGSM and PGD at a few eps, plus
noise and blur for images), AUROC, flag rate and accuracy undefended / defense / corrected, with a
warning where correction hurts. The same numbers go into detector.json (``meta["card"]``).

Accuracy is against the true labels when they are given; otherwise against the classifier's own
predictions on the clean held-out instances (agreement), which the card says.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from adae_stream.detector import attacks
from adae_stream.detector.card_figure import write_card_figure
from adae_stream.detector.evaluation import auroc

log = logging.getLogger(__name__)

EPS = (0.05, 0.1, 0.2)
MAX_EVAL = 1000  # held-out instances attacked (attacks cost gradient passes)
HURTS_BY = 0.01  # corrected accuracy this far under undefended is flagged in the card


def _row(
    kind: str, eps: float | None, clean_scores: np.ndarray, out: dict[str, np.ndarray], y: np.ndarray
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": kind,
        "eps": eps,
        "flag_rate": float(np.mean(out["is_adversarial"])),
        "auroc": None if kind == "clean" else auroc(clean_scores, out["instance_score"]),
        **{f"acc_{p}": float(np.mean(out[p] == y)) for p in ("no_defense", "defense", "corrected")},
    }
    row["correction_hurts"] = row["acc_corrected"] < row["acc_no_defense"] - HURTS_BY
    return row


def evaluate(detector: Any, X_held: np.ndarray, y_held: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
    """Clean and attacked held-out data through detector.correct(): the card's table."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(X_held))[:MAX_EVAL]
    X = X_held[idx]
    clean = detector.correct(X, return_instance_score=True, return_all_predictions=True)["data"]
    y = y_held[idx] if y_held is not None else clean["no_defense"]
    image = detector.meta.get("data_type") == "image" or X.ndim == 4
    bounds = (0.0, 1.0) if image and X.min() >= 0.0 and X.max() <= 1.0 else None
    scale = 1.0 if bounds is not None else float(np.std(X))  # tabular eps is in units of the data's spread
    variants: list[tuple[str, float | None, np.ndarray]] = []
    for eps in EPS:
        variants.append(("fgsm", eps, attacks.fgsm(detector.model, X, y, eps=eps * scale, bounds=bounds)))
        variants.append(
            (
                "pgd",
                eps,
                attacks.pgd(
                    detector.model, X, y, eps=eps * scale, alpha=eps * scale / 4, steps=10, seed=seed, bounds=bounds
                ),
            )
        )
    if image:
        variants.append(("noise", 0.3, attacks.gaussian_noise(X, sigma=0.3, seed=seed)))
        variants.append(("blur", None, attacks.blur(X)))
    rows = [_row("clean", None, clean["instance_score"], clean, y)]
    for kind, strength, x_adv in variants:
        out = detector.correct(x_adv, return_instance_score=True, return_all_predictions=True)["data"]
        rows.append(_row(kind, strength, clean["instance_score"], out, y))
    return {
        "held_out_evaluated": len(X),
        "labels": "true" if y_held is not None else "classifier agreement",
        "eps_units": "input range [0, 1]" if bounds else "standard deviations of the data",
        "rows": rows,
    }


def write_card(
    out_dir: str | Path, detector: Any, table: dict[str, Any], train_scores: np.ndarray, held_out_scores: np.ndarray
) -> Path:
    """card.md and card.svg in out_dir (the detector's directory)."""
    out = Path(out_dir)
    cal = detector.meta.get("calibration")
    ids = detector.meta.get("identity", {})
    lines = ["# Detector card", ""]
    if ids:
        lines += [f"Detector id `{ids.get('detector_id')}`, classifier id `{ids.get('classifier_id')}`.", ""]
    lines.append(f"Threshold: {detector.threshold:.6g} (scores above it are flagged).")
    if cal:
        lines.append(
            f"Calibrated for a false-positive rate of {cal['target_fpr']:g} on {cal['held_out']} held-out clean "
            f"instances the AE did not train on: {cal['expected_fpr']:.2%} of them flagged; the true rate on clean "
            f"traffic like them is at most {cal['fpr_upper_bound']:.2%} at {cal['confidence']:.0%} confidence."
        )
    else:
        lines.append(
            "The threshold is a percentile of the scores it was inferred on (not calibrated on held-out data): "
            "expect more false alarms on clean traffic than that percentile says."
        )
    clean_train_rate = float(np.mean(train_scores > detector.threshold))
    clean_held_rate = float(np.mean(held_out_scores > detector.threshold))
    lines += [
        f"Flagged at this threshold: {clean_train_rate:.2%} of training instances, {clean_held_rate:.2%} of held-out "
        "clean instances.",
        "",
        f"Attacks against the classifier on {table['held_out_evaluated']} held-out instances (accuracy against "
        f"{table['labels']}; eps in {table['eps_units']}):",
        "",
        "| traffic | eps | AUROC | flag rate | acc undefended | acc defense | acc corrected | |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in table["rows"]:
        au = "" if r["auroc"] is None else f"{r['auroc']:.3f}"
        warn = "**correction hurts**" if r["correction_hurts"] else ""
        eps = "" if r["eps"] is None else f"{r['eps']:g}"
        lines.append(
            f"| {r['kind']} | {eps} | {au} | {r['flag_rate']:.1%} | {r['acc_no_defense']:.1%} | "
            f"{r['acc_defense']:.1%} | {r['acc_corrected']:.1%} | {warn} |"
        )
    hurt = [
        f"{r['kind']}" + (f" {r['eps']:g}" if r["eps"] is not None else "")
        for r in table["rows"]
        if r["correction_hurts"]
    ]
    if hurt:
        lines += [
            "",
            f"**Warning:** on {', '.join(hurt)}, the corrected predictions are less accurate than the undefended "
            "ones. If such traffic is expected, consider publishing `no_defense` there or retraining the AE.",
        ]
    lines += ["", "![training curve and score distributions](card.svg)", ""]
    (out / "card.md").write_text("\n".join(lines))
    write_card_figure(
        out / "card.svg",
        getattr(detector, "history", None) or [],
        getattr(detector, "val_history", None) or [],
        train_scores,
        held_out_scores,
        detector.threshold,
    )
    return out / "card.md"
