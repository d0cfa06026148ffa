"""Per-kind demo statistics: flag rate, accuracies, AUROC (clean vs kind), latency."""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if len(negative) == 0 or len(positive) == 0:
        return float("nan")
    scores = np.concatenate([negative, positive])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    r_pos = ranks[len(negative):].sum()
    return float((r_pos - len(positive) * (len(positive) + 1) / 2) / (len(negative) * len(positive)))


class DemoStats:
    def __init__(self) -> None:
        self.scores: dict[str, list[np.ndarray]] = defaultdict(list)
        self.rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.latencies: list[float] = []
        self.answered_ids: dict[str, int] = defaultdict(int)

    def add(self, kind: str, labels: np.ndarray, answer: dict, latency_s: float) -> None:
        row = self.rows[kind]
        row["requests"] += 1
        row["n"] += len(labels)
        row["flagged"] += int(np.sum(answer["is_adversarial"]))
        row["acc_no_defense"] += int(np.sum(answer["no_defense"] == labels))
        row["acc_defense"] += int(np.sum(answer["defense"] == labels))
        row["acc_corrected"] += int(np.sum(answer["corrected"] == labels))
        self.scores[kind].append(np.asarray(answer["instance_score"]))
        self.latencies.append(latency_s)

    def table(self) -> list[dict]:
        clean = np.concatenate(self.scores["clean"]) if self.scores.get("clean") else np.zeros(0)
        out = []
        for kind, row in self.rows.items():
            n = max(row["n"], 1)
            scores = np.concatenate(self.scores[kind]) if self.scores[kind] else np.zeros(0)
            out.append({
                "kind": kind, "requests": row["requests"], "instances": row["n"], "flag_rate": row["flagged"] / n,
                "auroc_vs_clean": float("nan") if kind == "clean" else auroc(clean, scores),
                "acc_no_defense": row["acc_no_defense"] / n, "acc_defense": row["acc_defense"] / n, "acc_corrected": row["acc_corrected"] / n,
            })
        order = ["clean", "fgsm", "pgd", "noise", "blur", "occlusion"]
        return sorted(out, key=lambda r: order.index(r["kind"]) if r["kind"] in order else 99)

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")
