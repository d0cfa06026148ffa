"""demo-report/: a Markdown summary, summary.json, and PNG plots (score histograms, accuracy bars)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from adae_stream.demo.stats import DemoStats


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def write_report(out_dir: str | Path, stats: DemoStats, threshold: float, delivery: dict, run_info: dict) -> Path:
    """report.md, its two figures and summary.json in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = stats.table()
    _plot(out, stats, table, threshold)
    (out / "report.md").write_text("\n".join(_markdown(table, threshold, delivery, run_info)))
    (out / "summary.json").write_text(
        json.dumps({"threshold": threshold, "delivery": delivery, "run": run_info, "kinds": table}, indent=1)
    )
    return out


def _plot(out: Path, stats: DemoStats, table: list[dict], threshold: float) -> None:
    """scores.png (score distribution per traffic kind) and accuracy.png (accuracy per kind)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    all_scores = [np.concatenate(stats.scores[r["kind"]]) for r in table]
    positive = np.concatenate([s[s > 0] for s in all_scores] + [np.array([threshold])])
    bins = np.logspace(np.log10(max(positive.min(), 1e-6)), np.log10(positive.max() * 1.01), 50)
    for r, s in zip(table, all_scores, strict=True):
        ax.hist(
            np.clip(s, bins[0], None),
            bins=bins.tolist(),
            histtype="step",
            linewidth=1.6,
            label=r["kind"],
            weights=np.full(len(s), 1.0 / max(len(s), 1)),
        )
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("adversarial score KL(M(x) || M(AE(x)))")
    ax.set_ylabel("fraction of the kind's instances")
    ax.set_title("Score distribution per traffic kind")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(len(table))
    w = 0.27
    for i, (key, label) in enumerate(
        [("acc_no_defense", "undefended"), ("acc_defense", "defense (always AE)"), ("acc_corrected", "corrected")]
    ):
        ax.bar(x + (i - 1) * w, [r[key] for r in table], w, label=label)
    ax.set_xticks(x, [r["kind"] for r in table])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy per traffic kind")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)


def _markdown(table: list[dict], threshold: float, delivery: dict, run_info: dict) -> list[str]:
    lines = [
        "# adae-stream demo report",
        "",
        f"Detector threshold: {threshold:.6g}. Requests produced: {delivery['produced']}, answered: "
        f"{delivery['answered']}, "
        f"missing: {delivery['missing']}, duplicated: {delivery['duplicates']}.",
        f"Throughput: {run_info['throughput']:.0f} instances/s; request latency p50 {run_info['p50_ms']:.1f} ms, p99 "
        f"{run_info['p99_ms']:.1f} ms.",
        "",
        "| kind | requests | instances | flag rate | AUROC vs clean | acc undefended | acc defense | acc corrected |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['kind']} | {r['requests']} | {r['instances']} | {_fmt(r['flag_rate'])} | "
            f"{_fmt(r['auroc_vs_clean'])} | "
            f"{_fmt(r['acc_no_defense'])} | {_fmt(r['acc_defense'])} | {_fmt(r['acc_corrected'])} |"
        )
    live = run_info.get("live_accuracy_from_metrics")
    if live and live.get("labelled_instances"):
        sent = run_info.get("feedback_sent", {})
        lines += [
            "",
            "Live accuracy from the feedback loop, as the service's own metrics report it "
            f"(`adae_feedback_correct_total / adae_feedback_instances_total`; {live['labelled_instances']:.0f} "
            "labelled "
            f"instances; {sent.get('lost', 0)} label records lost and {sent.get('duplicated', 0)} duplicated on "
            "purpose): "
            f"undefended {_fmt(live['no_defense'])}, defense {_fmt(live['defense'])}, corrected "
            f"{_fmt(live['corrected'])}.",
        ]
    lines += _decisions(
        run_info.get("decisions") or [], run_info.get("published") or [], run_info.get("decision_standing") or {}
    )
    lines += _changes(run_info)
    lines += ["", "![scores](scores.png)", "", "![accuracy](accuracy.png)", ""]
    return lines


def _changes(run_info: dict) -> list[str]:
    """What the fleet's change detectors saw: each event's first alarm, its estimated start and its delay."""
    alarms, incident = run_info.get("changes"), run_info.get("incident")
    if alarms is None:
        return []
    lines = ["", "## Change detection", ""]
    lines.append(
        f"Baseline: the first {run_info.get('change_baseline_instances')} instances scored. "
        + (
            f"Incident: {incident['share']:.0%} of requests became {incident['kind']} at {incident['at_s']:.1f} s."
            if incident
            else "No incident in this run."
        )
    )
    if not alarms:
        lines.append("No alarm.")
        return lines
    lines += ["", "| event | first alarm | change began (estimate) | delay after the incident | rate before -> after |"]
    lines.append("|---|---:|---:|---:|---|")
    for a in alarms:
        delay = f"{a['alarmed_s'] - incident['at_s']:.1f} s" if incident else "-"
        lines.append(
            f"| {a['event']} (odds x{a['odds_ratio']:g}) | {a['alarmed_s']:.1f} s | {a['began_s']:.1f} s | {delay} | "
            f"{a['rate_before']:.3f} -> {a['rate_after']:.3f} |"
        )
    return lines


def _decisions(decisions: list[dict], published: list[dict], standing: dict) -> list[str]:
    """When the decision-maker decided what, on what evidence, and the accuracy of what was published."""
    lines = ["", "## Decisions from live evidence", ""]
    if not decisions:
        lines.append(
            f"No decision: the evidence did not reach any test's threshold in this run ({standing.get('tests')})."
        )
    if standing.get("failed_checks"):
        lines.append(f"Checks that failed, by cause (see the log): {standing['failed_checks']}.")
    for d in decisions:
        evidence = ""
        if "b" in d:
            e = ", ".join(f"{k} {v:.3g}" for k, v in d["e_values"].items())
            evidence = (
                f": {d['b'] + d['c']} labelled instances where the two predictions differed (corrected right alone "
                f"{d['b']}, undefended right alone {d['c']}; {d['m']} agreed), e-values {e}; a direction "
                f"decides at 2/alpha = {2 / d['alpha']:.0f} (alpha {d['alpha']:.3g} for the test, half to each "
                "direction)"
            )
        lines.append(f"- at {d['at_s']:.1f} s, **{d['decision']}** ({d['detail']}){evidence}.")
    if published:
        lines += ["", "| published | from | to | instances | accuracy |", "|---|---:|---:|---:|---:|"]
        for p in published:
            lines.append(
                f"| {p['published']} | {p['from_s']:.1f} s | {p['to_s']:.1f} s | {p['instances']} | "
                f"{_fmt(p['accuracy'])} |"
            )
    return lines
