"""Metrics through a real Prometheus scraping the running pipeline; health and responsiveness."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from adae_stream.codecs import decode_response
from adae_stream.detector.attacks import fgsm
from adae_stream.runner import run_pipeline
from tests.kafka_helpers import collect, make_config, produce_requests
from tests.prometheus_helpers import Prometheus


def start(cfg, scorer, bootstrap):
    holder = {}
    ready = threading.Event()
    t = threading.Thread(
        target=lambda: holder.setdefault(
            "rc",
            run_pipeline(
                cfg,
                scorer,
                bootstrap,
                install_signals=False,
                on_ready=lambda s: (holder.update(p=s.pipeline, url=s.metrics_url), ready.set()),
            ),
        ),
        daemon=True,
    )
    t.start()
    assert ready.wait(30)
    return holder, t


def get(url: str) -> tuple[int, bytes]:
    try:
        r = urllib.request.urlopen(url, timeout=5)
        return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_prometheus_sees_what_the_output_topic_says(
    broker, digits_setup, digits_scorer, digits_detector_path, tmp_path
):
    det, clf = digits_setup["detector"], digits_setup["clf"]
    Xte, yte = digits_setup["Xte"], digits_setup["yte"]
    cfg = make_config(
        broker.bootstrap, digits_detector_path, metrics={"enabled": True, "port": 0, "drift_interval_s": 0.5}
    )
    holder, thread = start(cfg, digits_scorer, broker.bootstrap)
    pipeline = holder["p"]
    base = holder["url"].rsplit("/", 1)[0]
    assert get(base + "/healthz")[0] == 503  # detector loaded, but no partitions assigned yet
    deadline = time.monotonic() + 30
    while not pipeline.ready and time.monotonic() < deadline:
        time.sleep(0.1)
    assert get(base + "/healthz")[0] == 200
    prom = Prometheus(tmp_path, [base.split("//")[1]])
    try:
        # known mix: 3/4 clean, 1/4 FGSM adversarial
        clean = Xte[:240]
        adv = fgsm(clf, Xte[240:320], yte[240:320], eps=0.15)
        sent = produce_requests(broker.bootstrap, cfg.kafka.input_topic, clean, "v2", batch=8, prefix="clean")
        sent.update(produce_requests(broker.bootstrap, cfg.kafka.input_topic, adv, "v2", batch=8, prefix="adv"))
        bad = produce_requests(broker.bootstrap, cfg.kafka.input_topic, np.zeros((2, 3)), "v2", batch=1, prefix="bad")
        records = collect(broker.bootstrap, cfg.kafka.output_topic, len(sent), timeout_s=60)
        answers = [decode_response(r.value, r.headers) for r in records]
        assert len(answers) == len(sent)
        n = sum(len(a["is_adversarial"]) for a in answers)
        flagged = int(sum(a["is_adversarial"].sum() for a in answers))
        changed = int(sum((a["corrected"] != a["no_defense"]).sum() for a in answers))
        adv_flag_rate = np.mean(np.concatenate([a["is_adversarial"] for a in answers if a["id"].startswith("adv")]))
        clean_flag_rate = np.mean(np.concatenate([a["is_adversarial"] for a in answers if a["id"].startswith("clean")]))
        assert adv_flag_rate > clean_flag_rate + 0.2  # the known adversarial fraction is visible

        assert prom.wait_for('adae_instances_total{job="adae-stream"}', lambda v: v >= n) == n
        assert prom.wait_for('adae_requests_total{status="dead_letter"}', lambda v: v >= len(bad)) == len(bad)
        assert prom.query("adae_flagged_total") == flagged
        assert prom.query("adae_corrected_changed_total") == changed
        assert prom.query('adae_requests_total{status="ok"}') == len(sent)
        assert prom.query('adae_dead_letter_total{reason="shape"}') == len(bad)
        assert prom.query("adae_flag_rate") == pytest.approx(flagged / n)
        assert prom.query("adae_threshold") == pytest.approx(det.threshold)
        assert prom.query("adae_score_count") == n
        # the threshold is a bucket edge: everything at or below it is exactly the unflagged instances
        assert prom.query(f'adae_score_bucket{{le="{float(np.float32(det.threshold))!r}"}}') == n - flagged
        assert prom.query("sum(adae_batch_size_sum)") == n
        assert prom.query("adae_end_to_end_seconds_count") == len(sent)
        assert prom.query("adae_kafka_up") == 1
        assert prom.wait_for("adae_score_drift", lambda v: v > 0) > 0
        assert 0 <= prom.query("adae_score_drift_p_value") <= 1
        assert prom.query("sum(adae_predicted_class_total)") == n
        assert prom.query('count(adae_build_info{version!=""})') == 1
        assert prom.wait_for("sum(adae_consumer_lag)", lambda v: v == 0) == 0
    finally:
        prom.stop()
        pipeline.stop()
        thread.join(30)
    assert holder["rc"] == 0


class SlowScorer:
    """Wraps the real scorer and holds the scoring call until released, like a long batch on a busy CPU."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.info = inner.info
        self.in_call, self.release = threading.Event(), threading.Event()

    def __call__(self, x):
        self.in_call.set()
        self.release.wait(60)  # the long batch itself
        return self.inner(x)

    def warmup(self, up_to=None):
        self.inner.warmup(up_to)


def test_metrics_responsive_while_scoring(broker, digits_setup, digits_scorer, digits_detector_path):
    cfg = make_config(broker.bootstrap, digits_detector_path, metrics={"enabled": True, "port": 0})
    slow = SlowScorer(digits_scorer)
    holder, thread = start(cfg, slow, broker.bootstrap)
    try:
        produce_requests(broker.bootstrap, cfg.kafka.input_topic, digits_setup["Xte"][:8], "v2", batch=8)
        assert slow.in_call.wait(30)
        status, body = get(holder["url"])  # while the batch is still being scored: held until the finally
        assert status == 200 and b"adae_instances_total" in body
    finally:
        slow.release.set()
        holder["p"].stop()
        thread.join(30)
