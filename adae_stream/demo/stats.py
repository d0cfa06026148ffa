"""Per-kind demo statistics: flag rate, accuracies, AUROC (clean vs kind), latency."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from adae_stream.detector.evaluation import auroc


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
            out.append(
                {
                    "kind": kind,
                    "requests": row["requests"],
                    "instances": row["n"],
                    "flag_rate": row["flagged"] / n,
                    "auroc_vs_clean": float("nan") if kind == "clean" else auroc(clean, scores),
                    "acc_no_defense": row["acc_no_defense"] / n,
                    "acc_defense": row["acc_defense"] / n,
                    "acc_corrected": row["acc_corrected"] / n,
                }
            )
        order = ["clean", "fgsm", "pgd", "noise", "blur", "occlusion"]
        return sorted(out, key=lambda r: order.index(r["kind"]) if r["kind"] in order else 99)

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")
