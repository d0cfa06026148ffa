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
        # what answers published, per choice (the adae-prediction header): instances, correct, first and last
        # answer's time in seconds since the watch started
        self.published: dict[str, dict[str, float]] = {}

    def add(
        self, kind: str, labels: np.ndarray, answer: dict, latency_s: float, published: str = "", at_s: float = 0.0
    ) -> None:
        if published:
            row_p = self.published.setdefault(published, {"instances": 0, "correct": 0, "from_s": at_s, "to_s": at_s})
            row_p["instances"] += len(labels)
            row_p["correct"] += int(np.sum(answer["prediction"] == labels))
            row_p["to_s"] = at_s
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

    def published_table(self) -> list[dict]:
        """Accuracy of what answers published, per choice, in the order the choices were first published."""
        rows = sorted(self.published.items(), key=lambda item: item[1]["from_s"])
        return [
            {"published": choice, **row, "accuracy": row["correct"] / max(row["instances"], 1)} for choice, row in rows
        ]

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")
