"""Mixed precision, measured: the detector's ``precision`` option against float32, speed and fidelity.

    python -m benchmarks.precision

Speed: correct() on the benchmark models (untrained: timing only), float32 vs mixed_bfloat16, same
batch, same run. Fidelity: on the trained digits detector (the demo's recipe), each precision infers
its own threshold on held-out normal data, as a deployment would; then score error, flags that differ
on normal and FGSM-attacked data, detection AUROC and corrected accuracy, float32 vs bfloat16.
"""

from __future__ import annotations

import os
import sys
from functools import partial

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def as_precision(det, precision: str, x_threshold: np.ndarray, perc: float = 95.0):
    """The same trained detector scoring in `precision`, its threshold inferred in that precision."""
    from adae_stream import AdversarialAE

    out = AdversarialAE(
        ae=det.ae,
        model=det.model,
        model_hl=det.model_hl,
        w_model_hl=det.w_model_hl,
        temperature=det.temperature,
        precision=precision,
    )
    out.infer_threshold(x_threshold, perc)
    return out


def speed(models: dict, batches=(32, 256), min_time_s: float = 1.5) -> list[dict]:
    from benchmarks.compute import rates

    rows = []
    for name, (det, x) in models.items():
        d16 = as_precision(det, "mixed_bfloat16", x[:256])
        for b in batches:
            xb = x[:b]
            r = rates(
                {
                    "float32": partial(det.correct, xb, batch_size=b),
                    "mixed_bfloat16": partial(d16.correct, xb, batch_size=b),
                },
                b,
                min_time_s,
            )
            r32, r16 = r["float32"], r["mixed_bfloat16"]
            rows.append({"model": name, "batch": b, "float32": r32, "mixed_bfloat16": r16, "speedup": r16 / r32})
            print(
                f"  {name:8s} batch {b:4d}: correct() float32 {r32:9.0f}/s  mixed_bfloat16 {r16:9.0f}/s  speed-up "
                f"{r16 / r32:4.2f}",
                flush=True,
            )
    return rows


def fidelity(epochs: int = 30, seed: int = 0) -> dict:
    from adae_stream.demo.data import load_digits_split
    from adae_stream.demo.detector_cache import train_demo_detector
    from adae_stream.detector.attacks import fgsm
    from adae_stream.detector.evaluation import auroc

    det, _, _ = train_demo_detector(epochs, seed)
    Xtr, _, Xte, yte = load_digits_split(seed)
    held_out = Xtr[int(len(Xtr) * 0.8) :]  # the recipe's threshold data
    x_adv = fgsm(det.model, Xte, yte, eps=0.2)
    out = {}
    by = {p: as_precision(det, p, held_out) for p in ("float32", "mixed_bfloat16")}
    for p, d in by.items():
        clean, adv = d.correct(Xte)["data"], d.correct(x_adv)["data"]
        out[p] = {
            "threshold": d.threshold,
            "clean": clean,
            "adv": adv,
            "auroc": auroc(clean["instance_score"], adv["instance_score"]),
            "flag_rate_clean": float(clean["is_adversarial"].mean()),
            "flag_rate_adv": float(adv["is_adversarial"].mean()),
            "corrected_acc_adv": float(np.mean(adv["corrected"] == yte)),
        }
    a, b = out["float32"], out["mixed_bfloat16"]
    s32 = np.concatenate([a["clean"]["instance_score"], a["adv"]["instance_score"]])
    s16 = np.concatenate([b["clean"]["instance_score"], b["adv"]["instance_score"]])
    summary = {
        "median_rel_score_error": float(np.median(np.abs(s16 - s32) / np.maximum(s32, 1e-12))),
        "flags_differ_clean": float(np.mean(a["clean"]["is_adversarial"] != b["clean"]["is_adversarial"])),
        "flags_differ_adv": float(np.mean(a["adv"]["is_adversarial"] != b["adv"]["is_adversarial"])),
        "corrected_differ_adv": float(np.mean(a["adv"]["corrected"] != b["adv"]["corrected"])),
    }
    for p in by:
        summary[p] = {
            k: out[p][k] for k in ("threshold", "auroc", "flag_rate_clean", "flag_rate_adv", "corrected_acc_adv")
        }
    return summary


def main() -> int:
    from benchmarks.models import cifar, tabular

    print("speed: correct(), float32 vs mixed_bfloat16 (same run)")
    rows = speed({"cifar": cifar(), "tabular": tabular()})
    print(
        "\nfidelity: the trained digits detector, each precision with its own threshold (p95 of held-out normal data)"
    )
    f = fidelity()
    for p in ("float32", "mixed_bfloat16"):
        r = f[p]
        print(
            f"  {p:15s}: threshold {r['threshold']:.4g}  AUROC(clean vs FGSM 0.2) {r['auroc']:.3f}  flagged clean "
            f"{r['flag_rate_clean']:.1%}  "
            f"flagged FGSM {r['flag_rate_adv']:.1%}  corrected accuracy on FGSM {r['corrected_acc_adv']:.1%}"
        )
    print(
        f"  median relative score error {f['median_rel_score_error']:.1%}; flags that differ: clean "
        f"{f['flags_differ_clean']:.1%}, "
        f"FGSM {f['flags_differ_adv']:.1%}; corrected labels that differ on FGSM {f['corrected_differ_adv']:.1%}"
    )
    if len(sys.argv) > 2 and sys.argv[1] == "--json":
        import json

        with open(sys.argv[2], "w") as fh:
            json.dump({"speed": rows, "fidelity": f}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
