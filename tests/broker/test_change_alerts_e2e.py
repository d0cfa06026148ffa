"""The change alerts end to end: real pipelines on the embedded broker send their batch summaries, a real
`adae-stream decide` process watches them, and a real Prometheus scrapes it and evaluates the shipped
deploy/prometheus/alerts.yml. A clean run raises no alert; a 10 % blur share fires AdaeFlagRateChanged, with
one replica and with three (one chart for the fleet)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from adae_stream.codecs import encode_request
from adae_stream.detector.attacks import blur
from adae_stream.stream.broker import free_port
from tests.kafka_helpers import make_config, producer, start_pipeline
from tests.process_helpers import ROOT, PipelineProcess
from tests.prometheus_helpers import Prometheus
from tests.waiting import wait_for

RATE = 100  # requests/s of 8 instances: 800 instances/s in all
BASELINE = 3000  # instances of warm-up: 3.75 s at that rate
CHANGE_ALERTS = ("AdaeFlagRateChanged", "AdaeScoreShapeChanged", "AdaeClassMixChanged")


class MixedTraffic(threading.Thread):
    """Requests of 8 instances, each drawn at random: from ``bad`` with probability ``share``, else ``clean``."""

    def __init__(self, bootstrap: str, topic: str, clean: np.ndarray, bad: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.p = producer(bootstrap)
        self.topic, self.clean, self.bad = topic, clean, bad
        self.share = 0.0
        self.instances = 0
        self.rng = np.random.default_rng(7)
        self._halt = threading.Event()

    def run(self) -> None:
        i, start = 0, time.monotonic()
        while not self._halt.is_set():
            pick_bad = self.rng.random(8) < self.share
            x = np.where(
                pick_bad[:, None, None, None],
                self.bad[self.rng.integers(0, len(self.bad), 8)],
                self.clean[self.rng.integers(0, len(self.clean), 8)],
            )
            payload, headers = encode_request(x.astype(np.float32), "v2", f"m-{i}")
            self.p.send(self.topic, value=payload, key=f"m-{i}".encode(), headers=headers)
            self.instances += 8
            i += 1
            self._halt.wait(max(0.0, start + i / RATE - time.monotonic()))

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
        self.p.close()


def firing(prom: Prometheus) -> list[dict]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] in CHANGE_ALERTS]


@pytest.mark.parametrize("replicas", [1, 3])
def test_a_clean_run_raises_no_alert_and_a_blur_incident_fires_the_flag_alert(
    broker, digits_setup, digits_scorer, digits_detector_path, tmp_path, replicas
):
    port = free_port()
    cfg = make_config(
        broker.bootstrap,
        digits_detector_path,
        monitoring={"baseline_instances": BASELINE, "interval_s": 1.0, "state_dir": str(tmp_path / "monitor")},
        decisions={"metrics_port": port},
    )
    pipelines = [start_pipeline(cfg, digits_scorer) for _ in range(replicas)]
    decide = PipelineProcess(cfg, tmp_path, "decide", command="decide").start()
    traffic = None
    prom = Prometheus(
        tmp_path, [f"127.0.0.1:{port}"], job="adae-decide", rule_files=[ROOT / "deploy" / "prometheus" / "alerts.yml"]
    )
    try:
        wait_for(lambda: all(p.pipeline.ready for p in pipelines), 60, "every replica has its partitions")
        assert decide.wait_log("decision metrics: http://", timeout_s=60), decide.text()[-3000:]
        Xte = digits_setup["Xte"]
        traffic = MixedTraffic(broker.bootstrap, cfg.kafka.input_topic, Xte, blur(Xte))
        traffic.start()
        wait_for(
            lambda: prom.query('min(adae_change_baseline_progress{role="serving"})') == 1.0,
            120,
            "the fleet's baseline warmed up",
        )
        # a clean while: the whole set's false alarms come once per 30 days at the observed rate, so any alarm
        # in these 4,000 instances (5 s) is a failure (its chance: about 4e-6)
        target = traffic.instances + 4000
        wait_for(lambda: traffic.instances >= target, 60, "4000 more clean instances")
        clean_end = time.time()
        wait_for(  # decide has read past the clean while and Prometheus has scraped it (the rules run each second)
            lambda: (prom.query("max(adae_change_last_check_timestamp_seconds)") or 0) > clean_end + 1,
            30,
            "a check after the clean while, scraped",
        )
        assert firing(prom) == [] and (prom.query("sum(adae_change_alarms_total)") or 0) == 0, decide.text()[-3000:]
        incident = time.time()
        traffic.share = 0.1
        alert = wait_for(
            lambda: [a for a in firing(prom) if a["labels"]["alertname"] == "AdaeFlagRateChanged"],
            90,
            "AdaeFlagRateChanged fires",
        )[0]
        assert alert["labels"]["stream"] == "flags" and alert["labels"]["event"] == "flagged", alert
        assert "flags/flagged: rate" in alert["annotations"]["description"]
        # the delay: blur at 10 % of traffic roughly doubles this detector's flag rate (clean ~5 %, blur ~75 %),
        # which the x2 chart sees within seconds (benchmarks.alerts: median 2 s, p90 4 s); the target is 1 min
        alarmed = prom.query('max(adae_change_alarmed_timestamp_seconds{stream="flags"})')
        started = prom.query('max(adae_change_started_timestamp_seconds{stream="flags"})')
        assert alarmed is not None and alarmed - incident < 60, (alarmed, incident)
        print(f"\n[change alerts, {replicas} replica(s)] flags alarmed {alarmed - incident:.1f} s after the incident")
        assert (
            started is not None and incident - 5 < started <= alarmed
        )  # the estimate: after the incident, give or take a batch
        assert (prom.query('sum(adae_change_summaries_total{result="skipped"})') or 0) == 0
    finally:
        if traffic is not None:
            traffic.stop()
        prom.stop()
        decide.cleanup()
        for p in pipelines:
            p.stop()
