"""/metrics as prometheus-client serves it, negotiated: OpenMetrics for scrapers that ask, no _created series."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest

from adae_stream.monitoring.metrics import PipelineMetrics
from adae_stream.monitoring.server import MetricsServer


@pytest.fixture
def server():
    metrics = PipelineMetrics(
        threshold=0.5,
        reference_scores=np.linspace(0, 1, 20),
        n_classes=3,
        build_info={"version": "9.9.9", "detector": "9.9.8", "runtime": "tensorflow 2.99"},
    )
    metrics.observe_results(
        np.array([0.1, 0.9], np.float32), np.array([False, True]), np.array([0, 1]), np.array([0, 2])
    )
    started = MetricsServer(metrics.registry, "127.0.0.1", 0, ready=lambda: True).start()
    yield started
    started.stop()


def scrape(server: MetricsServer, accept: str | None) -> tuple[str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics")
    if accept is not None:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def test_plain_text_without_an_accept_header(server):
    content_type, body = scrape(server, None)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "adae_instances_total 2.0" in body
    assert 'adae_build_info{detector="9.9.8",runtime="tensorflow 2.99",version="9.9.9"} 1.0' in body
    assert "_created" not in body  # no creation-time twin beside each counter and histogram
    assert "# EOF" not in body


def test_openmetrics_when_the_scraper_asks_for_it(server):
    # what Prometheus 2.x/3.x sends by default
    accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    accept += "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    content_type, body = scrape(server, accept)
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert "# TYPE adae_build info" in body and "# TYPE adae_instances counter" in body
    assert "adae_instances_total 2.0" in body and "_created" not in body
