"""What the demo shows while it runs: a console table of flag rates and accuracies per traffic kind, and
the live accuracy the service's own feedback metrics report."""

from __future__ import annotations

import sys
import time

import numpy as np

from adae_stream.feedback.outcome import PREDICTIONS


def live_accuracy(registry) -> dict[str, float]:
    """Live accuracy of each prediction as the service's own metrics report it (labelled instances only)."""
    n = registry.get_sample_value("adae_feedback_instances_total") or 0.0
    out = {"labelled_instances": n}
    for prediction in PREDICTIONS:
        correct = registry.get_sample_value("adae_feedback_correct_total", {"prediction": prediction}) or 0.0
        out[prediction] = correct / n if n else float("nan")
    return out


class LiveView:
    """A refreshing console table on a terminal; plain periodic lines when output is not a TTY."""

    def __init__(self, stream=sys.stdout) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.lines_drawn = 0
        self.last = 0.0

    def draw(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (1.0 if self.tty else 5.0):
            return
        self.last = now
        if self.tty:
            if self.lines_drawn:
                self.stream.write(f"\x1b[{self.lines_drawn}F\x1b[J")
            self.stream.write(text + "\n")
            self.lines_drawn = text.count("\n") + 1
        else:
            self.stream.write(text + "\n\n")
        self.stream.flush()


def render(elapsed: float, duration: float, produced: int, stats, throughput: float, live: dict | None = None) -> str:
    frac = min(1.0, elapsed / duration) if duration else 1.0
    bar = "#" * int(frac * 30) + "-" * (30 - int(frac * 30))
    answered = sum(r["requests"] for r in stats.table())
    lines = [
        f"[{bar}] {frac * 100:5.1f}%  t={elapsed:5.1f}s  produced {produced}  answered {answered}  "
        f"throughput {throughput:7.0f} inst/s  latency p50 {stats.latency_ms(50):6.1f} ms p99 "
        f"{stats.latency_ms(99):6.1f} ms",
        f"{'kind':<10} {'inst':>6} {'flagged':>8} {'AUROC':>6} {'acc undef':>9} {'acc def':>8} {'acc corr':>8}",
    ]
    for r in stats.table():
        au = "" if r["kind"] == "clean" or np.isnan(r["auroc_vs_clean"]) else f"{r['auroc_vs_clean']:.2f}"
        lines.append(
            f"{r['kind']:<10} {r['instances']:>6} {r['flag_rate']:>8.1%} {au:>6} {r['acc_no_defense']:>9.1%} "
            f"{r['acc_defense']:>8.1%} {r['acc_corrected']:>8.1%}"
        )
    if live is not None and live["labelled_instances"]:
        lines.append(
            f"{'live (feedback, from the service metrics)':<44} {live['labelled_instances']:>6.0f} labelled: "
            f"undef {live['no_defense']:.1%} def {live['defense']:.1%} corr {live['corrected']:.1%}"
        )
    for p in stats.published_table():  # what answers carried, as the decision-maker chose it
        lines.append(
            f"{'published ' + p['published']:<44} {p['instances']:>6} answered:  accuracy {p['accuracy']:.1%} "
            f"(from {p['from_s']:.1f}s)"
        )
    return "\n".join(lines)


def render_changes(changes, incident: tuple[str, float, float] | None) -> str:
    """The change detectors' line: warming up, watching, or each event's first alarm with its delay."""
    what = "no incident" if incident is None else f"incident: {incident[1]:.0%} {incident[0]} from {incident[2]:.0f}s"
    warming = changes.warming()
    if warming < 1.0:
        return f"change detectors: baseline {warming:.0%} ({what})"
    alarms = changes.alarms()
    if not alarms:
        return f"change detectors: watching, no alarm ({what})"
    first = ", ".join(
        f"{a['event']} at {a['alarmed_s']:.1f}s"
        + ("" if incident is None else f" (+{a['alarmed_s'] - incident[2]:.1f}s)")
        for a in alarms[:4]
    )
    return f"change detectors: ALARM {first} ({what})"
