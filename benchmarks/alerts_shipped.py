"""The alert rules shipped before issue 39, evaluated by promtool on the series a stream makes.

AdaeFlagRateSpike, AdaeFlagRateHigh and AdaeScoreDrift with the recording rules they use, as they were in
deploy/prometheus/alerts.yml (commit 462b2f7). The series are what the service exported: the detector's
instance and flag counters and its drift gauges (the KS statistic and p-value of the last 2,000 scores against
the reference, monitoring/drift.py), scraped every 10 s and the rules evaluated every 30 s, as
deploy/prometheus/prometheus.yml does. promtool is asked at every evaluation after the incident began whether
each alert fires; the first time one does is its delay.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

SHIPPED_RULES = Path(__file__).with_name("shipped_alerts_before_issue39.yml")
ALERTS = ("AdaeFlagRateSpike", "AdaeFlagRateHigh", "AdaeScoreDrift")
SCRAPE_S, EVAL_S, WINDOW = 10, 30, 2000
LABELS = '{job="adae-stream",instance="a",detector="d",version="1",role="serving"}'


def _seconds(text: str) -> float:
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"([\d.]+)([hms])", text))


def first_alerts(
    draw: Callable[[float, int], tuple[np.ndarray, np.ndarray]],
    reference: np.ndarray,
    clean_s: float,
    length_s: float,
) -> float | None:
    """Seconds from the incident (at clean_s) to the first firing of any shipped alert, or None in length_s.
    ``draw(t, n)``: n instances' (flags, scores) at time t."""
    from adae_stream.monitoring.drift import ks_2samp

    steps = int((clean_s + length_s) / SCRAPE_S) + 1
    rate = 200
    instances = flagged = 0
    window = np.empty(0)
    series: dict[str, list[float]] = {"inst": [], "flag": [], "ks": [], "p": []}
    for i in range(steps):
        t = i * SCRAPE_S
        flags, scores = draw(t, rate * SCRAPE_S)
        instances += len(flags)
        flagged += int(flags.sum())
        window = np.concatenate([window, scores])[-WINDOW:]
        ks, p = ks_2samp(window, reference)
        for key, value in (("inst", instances), ("flag", flagged), ("ks", ks), ("p", p)):
            series[key].append(float(value))
    evals = [clean_s + k * EVAL_S for k in range(1, int(length_s / EVAL_S) + 1)]
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": f"{EVAL_S}s",
        "tests": [
            {
                "interval": f"{SCRAPE_S}s",
                "input_series": [
                    {"series": f"{name}{LABELS}", "values": " ".join(f"{v:.10g}" for v in series[key])}
                    for name, key in (
                        ("adae_detector_instances_total", "inst"),
                        ("adae_detector_flagged_total", "flag"),
                        ("adae_detector_score_drift", "ks"),
                        ("adae_detector_score_drift_p_value", "p"),
                    )
                ],
                "alert_rule_test": [
                    {"eval_time": f"{int(t)}s", "alertname": a, "exp_alerts": []} for t in evals for a in ALERTS
                ],
            }
        ],
    }
    promtool = shutil.which("promtool")
    if promtool is None:
        raise RuntimeError("promtool is needed (Debian package 'prometheus'; `make promtool`)")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "rules.yml").write_text(SHIPPED_RULES.read_text())
        Path(tmp, "test.yml").write_text(yaml.safe_dump(test, width=10**9))
        out = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp, capture_output=True, text=True)
    fired = [_seconds(m) for m in re.findall(r"alertname: \w+, time: ([\dhms.]+),", out.stdout + out.stderr)]
    return min(fired) - clean_s if fired else None
