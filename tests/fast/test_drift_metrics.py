"""KS drift in numpy vs scipy; metric names, buckets, window."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import generate_latest

from adae_stream.monitoring.drift import ks_2samp
from adae_stream.monitoring.histograms import score_buckets
from adae_stream.monitoring.metrics import PipelineMetrics


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5])
def test_ks_matches_scipy(shift):
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=700), rng.normal(shift, size=1300)
    d, p = ks_2samp(a, b)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    en = len(a) * len(b) / (len(a) + len(b))
    assert p == pytest.approx(stats.kstwobign.sf(np.sqrt(en) * d), rel=1e-6, abs=1e-12)


def test_score_buckets_around_threshold():
    edges = score_buckets(0.2)
    assert float(np.float32(0.2)) in edges  # the exact value the float32 graph compares against
    assert edges[0] == pytest.approx(0.002) and edges[-1] == pytest.approx(20.0)
    assert edges == sorted(edges) and len(edges) == 17


def test_metrics_exposition_and_window():
    m = PipelineMetrics(
        threshold=0.25,
        reference_scores=np.linspace(0, 0.3, 100),
        n_classes=3,
        window_size=10,
        build_info={"version": "v"},
    )
    scores = np.array([0.1, 0.25, 0.3, 5.0], np.float32)
    flags = scores > 0.25
    m.observe_results(scores, flags, np.array([0, 1, 2, 2]), np.array([0, 1, 1, 0]))
    m.observe_batch(4, 0.01)
    m.request_done("ok", end_to_end_s=0.02)
    m.request_done("dead_letter", reason="shape")
    text = generate_latest(m.registry).decode()
    assert "adae_instances_total 4.0" in text
    assert "adae_flagged_total 2.0" in text
    assert "adae_corrected_changed_total 2.0" in text
    assert 'adae_score_bucket{le="0.25"} 2.0' in text  # le semantics: 0.1 and 0.25 (== threshold) are under
    assert 'adae_score_bucket{le="+Inf"} 4.0' in text
    assert 'adae_dead_letter_total{reason="shape"} 1.0' in text
    assert 'adae_dead_letter_total{reason="scoring"} 0.0' in text
    assert 'adae_predicted_class_total{class="2"} 2.0' in text
    assert "adae_flag_rate 0.5" in text
    for _ in range(5):  # the window keeps only the last 10
        m.observe_results(np.zeros(4, np.float32), np.zeros(4, bool), np.zeros(4, int), np.zeros(4, int))
    assert m.window.flag_rate() == 0.0
    m.update_drift()  # a window of zeros against scores spread over [0, 0.3]: as far apart as 100 points go
    drift, drift_p = (m.registry.get_sample_value(n) for n in ("adae_score_drift", "adae_score_drift_p_value"))
    assert drift == pytest.approx(0.99) and drift_p < 1e-3  # the ECDFs differ by 1 - 1/100 just above 0
    m.observe_results(
        np.linspace(0, 0.3, 10).astype(np.float32), np.zeros(10, bool), np.zeros(10, int), np.zeros(10, int)
    )
    m.update_drift()  # the window now spread as the reference: the gauge comes down with it
    settled = m.registry.get_sample_value("adae_score_drift")
    assert settled == pytest.approx(ks_2samp(np.linspace(0, 0.3, 10).astype(np.float32), np.linspace(0, 0.3, 100))[0])
    assert settled < 0.15 and m.registry.get_sample_value("adae_score_drift_p_value") > 0.5
    m.set_lag("t", 1, 7)
    assert 'adae_consumer_lag{partition="1",topic="t"} 7.0' in generate_latest(m.registry).decode()
    m.set_lag("t", 1, None)
    assert "adae_consumer_lag{" not in generate_latest(m.registry).decode()


def test_class_counter_capped():
    m = PipelineMetrics(threshold=0.25, n_classes=1000, max_class_labels=20)
    assert m.class_counter is None
    assert "adae_predicted_class" not in generate_latest(m.registry).decode()
