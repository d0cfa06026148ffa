"""The change detectors (adae_stream/changes/): the exact ARL against independent computations and against
simulation checked after every batch, as the service checks; the designs, the shared false-alarm budget,
detection and the change-time estimate; the fleet's summaries through the monitor service with a restart."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from adae_stream.changes.charts import ChartSet, upper_bound
from adae_stream.changes.cusum import Chart, arl, design, weights
from adae_stream.changes.metrics import ChangeMetrics
from adae_stream.changes.service import ChangeService, rebaseline_saved
from adae_stream.config import load_config
from adae_stream.errors import ConfigError
from adae_stream.feedback.summaries import (
    Summary,
    SummaryFold,
    decode_summary,
    encode_summary,
    reference_edges,
    summarize,
)
from tests.stand_ins import MemoryBroker, StandInConsumer, StandInProducer


def dense_arl(p: float, up: int, down: int, h: int) -> float:
    """Brook & Evans with a dense matrix built state by state (an independent construction)."""
    m = np.eye(h)
    for s in range(h):
        m[s, max(0, s - down)] -= 1 - p
        if s + up < h:
            m[s, s + up] -= p
    return float(np.linalg.solve(m, np.ones(h))[0])


def run_lengths(p: float, up: int, down: int, h: int, runs: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Items until the first alarm, the chart checked after every ``batch`` items (counts only, as from a
    summary), for ``runs`` independent streams at once."""
    s = np.zeros(runs, np.int64)
    done = np.zeros(runs, np.int64)
    n = 0
    while (alive := done == 0).any():
        k = rng.binomial(batch, p, size=runs)
        s = np.maximum(0, s + up * k - down * (batch - k))
        n += batch
        done[alive & (s >= h)] = n
    return done


@pytest.mark.parametrize(
    ("p", "up", "down", "h"), [(0.0476, 14, 1, 60), (0.3, 2, 1, 25), (0.5, 8, 9, 70), (0.1, 8, 1, 5)]
)
def test_the_banded_arl_equals_a_dense_solve(p, up, down, h):
    assert arl(p, up, down, h) == pytest.approx(dense_arl(p, up, down, h), rel=1e-9)


def test_the_reference_chart_has_the_reference_arl():
    # change-detection.md: p0 0.0476, +14/-1, h 342: about 30 days at 200/s (the reference printed 30.1, we get
    # 30.6 days); a dense solve of the same chart agrees to 1e-6
    days = arl(0.0476, 14, 1, 342) / 200 / 86400
    assert 29.5 < days < 31.5
    assert arl(0.0476, 14, 1, 342) == pytest.approx(dense_arl(0.0476, 14, 1, 342), rel=1e-6)


@pytest.mark.parametrize("batch", [1, 8])
def test_simulated_run_lengths_meet_the_exact_arl_checked_item_by_item_or_after_batches(batch):
    p, up, down, h = 0.1, 8, 1, 30
    exact = arl(p, up, down, h)
    lengths = run_lengths(p, up, down, h, 4000, batch, np.random.default_rng(batch))
    # run lengths are near geometric (sd ~ mean): the mean of 4000 is within 4 standard errors = 6.3 % of it
    tolerance = 4 * lengths.std() / math.sqrt(len(lengths))
    if batch == 1:
        assert abs(lengths.mean() - exact) < tolerance
    else:  # checked after batches (the service): never shorter on average, up to the batch's own granularity
        assert lengths.mean() > exact - tolerance


def test_a_design_has_the_smallest_threshold_that_meets_its_target():
    d = design(0.0476, 2.0, 1e7)
    assert d.arl >= 1e7 > arl(d.p0, d.up, d.down, d.h - 1)
    assert d.arl == pytest.approx(arl(d.p0, d.up, d.down, d.h))  # the ARL stated is the threshold's
    assert d.p1 / (1 - d.p1) == pytest.approx(2 * 0.0476 / (1 - 0.0476))
    up, down, unit = weights(0.0476, d.p1, 1e7)
    assert (up, down) == (d.up, d.down) and abs(up * unit / math.log(d.p1 / 0.0476) - 1) < 0.02


def test_a_step_is_detected_and_its_start_estimated():
    chart = Chart(design(0.05, 2.0, 1e8))
    rng = np.random.default_rng(3)
    t = 0.0
    for _ in range(20_000):  # 100 s of clean batches of 10 at 0.05 s: 200 items/s
        t += 0.05
        assert chart.update(int(rng.binomial(10, 0.05)), 10, t) is None
    change_t = t
    alarm = None
    while alarm is None:
        t += 0.05
        alarm = chart.update(int(rng.binomial(10, 0.10)), 10, t)
    # expected delay ~ h / drift: threshold ~ 18 nats at ~0.025 nats per item under the change: ~ 750 items
    assert alarm.alarmed - change_t < 30
    assert change_t - 15 < alarm.started <= alarm.alarmed
    assert 0.07 < alarm.rate_after < 0.2 and alarm.rate_before == 0.05


def test_a_chart_set_shares_the_false_alarm_budget_and_designs_for_upper_bounds():
    cs = ChartSet(("d", "1", "serving"), 86400.0, 10_000, 0.999, [1.25, 2.0], 0.01)
    rng = np.random.default_rng(0)
    t = 0.0
    while not cs.ready:
        t += 0.1  # batches of 20 at 200/s
        k = int(rng.binomial(20, 0.05))
        classes = rng.multinomial(20, [0.5, 0.3, 0.2, 0.0])
        counts = {
            "flags/flagged": k,
            "score/high": int(rng.binomial(20, 0.25)),
            "score/low": int(rng.binomial(20, 0.25)),
        }
        counts.update({f"classes/{c}": int(n) for c, n in enumerate(classes) if n})
        cs.add(counts, 20, t)
    assert cs.instances_per_s == pytest.approx(200, rel=0.01)
    events = {e for e, _ in cs.charts}
    assert events == {
        "flags/flagged",
        "score/high",
        "score/low",
        "classes/0",
        "classes/1",
        "classes/2",
    }  # 3: never seen
    for (event, _), chart in cs.charts.items():  # each designed for the Wilson bound, not the estimate
        k = cs.baseline.events[event]
        assert (
            chart.design.p0 == pytest.approx(upper_bound(k, cs.baseline.items, 0.999))
            and chart.design.p0 > k / cs.baseline.items
        )
    per_item = sum(1 / c.design.arl for c in cs.charts.values())
    assert per_item <= 1 / (86400 * cs.instances_per_s) * (1 + 1e-9)  # the set's long-run false alarms
    flags = [c for (e, _), c in cs.charts.items() if e == "flags/flagged"]
    assert sum(1 / c.design.arl for c in flags) == pytest.approx(0.5 / (86400 * cs.instances_per_s), rel=0.2)


def test_the_wilson_bound_covers_the_rate():
    rng = np.random.default_rng(1)
    k = rng.binomial(2000, 0.05, size=20_000)
    below = np.mean([upper_bound(int(x), 2000, 0.99) < 0.05 for x in k])
    assert below < 0.02  # 1 % nominal; binomial discreteness and 20,000 draws (sd 0.07 %) leave room


def test_a_fold_of_batch_summaries_counts_what_one_summary_of_all_their_instances_counts():
    rng = np.random.default_rng(7)
    scores, flags, classes = rng.exponential(size=50), rng.random(50) < 0.2, rng.integers(0, 4, size=50)
    edges = (0.3, 1.4)
    fold: SummaryFold[int] = SummaryFold()
    cuts = [0, 7, 8, 30, 50]
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        fold.add(summarize("d", 1, "serving", 10.0 + i, scores[a:b], flags[a:b], classes[a:b], edges), i)
        fold.add(summarize("d", 2, "shadow", 10.0 + i, scores[a:b], flags[a:b], classes[a:b], None), i)
    (serving, last), (shadow, _) = fold.take()
    assert serving == summarize("d", 1, "serving", 10.0, scores, flags, classes, edges) and last == 3
    assert shadow == summarize("d", 2, "shadow", 10.0, scores, flags, classes, None)
    assert len(fold) == 0 and fold.take() == []


def test_summaries_round_trip_and_bad_ones_are_refused():
    s = summarize(
        "d",
        3,
        "serving",
        1.5,
        np.array([0.1, 0.15, 2.0, 0.3]),
        np.array([0, 0, 1, 0]),
        np.array([1, 1, 7, 2]),
        (0.2, 1.0),
    )
    assert (s.n, s.flagged, s.low, s.high, s.classes) == (4, 1, 2, 1, {"1": 2, "7": 1, "2": 1})
    assert decode_summary(encode_summary(s)) == s
    assert reference_edges(None) is None and reference_edges(np.arange(100.0)) == pytest.approx((24.75, 74.25))
    for bad in (None, b"{}", b"[1]", b'{"detector":"d","version":"1","role":"serving","t":1,"n":2,"flagged":3}'):
        with pytest.raises(ValueError):
            decode_summary(bad)


TOPIC = "out-summaries"


def config(tmp_path, **monitoring):
    return load_config(
        None,
        environ={},
        overrides={
            "kafka": {"bootstrap_servers": "memory:0", "output_topic": "out"},
            "monitoring": {
                "state_dir": str(tmp_path / "state"),
                "baseline_instances": 4000,
                "false_alarm_every": "1d",
                **monitoring,
            },
        },
    )


def publish(producers, rng, seconds: float, p: float, t0: float, detector: str = "d") -> float:
    """Batches of 10 at 200 instances/s in all, spread over the replicas' producers in turn."""
    t, i = t0, 0
    while t < t0 + seconds:
        t += 0.05
        flagged = int(rng.binomial(10, p))
        s = Summary(detector, "1", "serving", t, 10, flagged, None, None, {"0": 10 - flagged, "1": flagged})
        producers[i % len(producers)].send(TOPIC, encode_summary(s), key=detector.encode())
        i += 1
    return t


def test_three_replicas_summaries_make_one_fleet_chart_that_alarms_on_a_step_and_survives_a_restart(tmp_path):
    from prometheus_client import CollectorRegistry

    broker = MemoryBroker(partitions=3)
    replicas = [StandInProducer(broker) for _ in range(3)]
    cfg = config(tmp_path)
    registry = CollectorRegistry()
    service = ChangeService(
        cfg, "memory:0", ChangeMetrics(registry), StandInConsumer(broker, read_committed=True), fresh="beginning"
    )
    rng = np.random.default_rng(5)
    t = publish(replicas, rng, 60, 0.05, 1_000_000.0)  # 12,000 instances: the warm-up, then watched
    assert service.check() == []
    (charts,) = service.monitor.sets.values()
    assert charts.ready and charts.baseline.items == 4000 and charts.instances_per_s == pytest.approx(200, rel=0.02)
    service.close()
    with pytest.raises(ConfigError, match="another change monitor"):  # one per state directory
        held = ChangeService(cfg, "memory:0", None, StandInConsumer(broker, read_committed=True))
        ChangeService(cfg, "memory:0", None, StandInConsumer(broker, read_committed=True))
    held.close()
    # restarted: the charts as they were, the summaries read from where they stopped (nothing twice)
    registry = CollectorRegistry()
    service = ChangeService(cfg, "memory:0", ChangeMetrics(registry), StandInConsumer(broker, read_committed=True))
    (again,) = service.monitor.sets.values()
    assert again.to_json() == charts.to_json()
    change = t
    publish(replicas, rng, 60, 0.10, t)
    fired = service.check()
    assert fired and fired[0].event in {"flags/flagged", "classes/1"}
    first = min(f.alarm.alarmed for f in fired)
    assert first - change < 20  # the fleet's 200/s: about 4 s expected at 2x (change-detection.md)
    assert (
        registry.get_sample_value(
            "adae_change_alarms_total",
            {"detector": "d", "version": "1", "role": "serving", "stream": "flags", "event": "flagged"},
        )
        >= 1
    )
    service.close()
    assert rebaseline_saved(cfg, "d") == 1
    service = ChangeService(cfg, "memory:0", None, StandInConsumer(broker, read_committed=True))
    assert not next(iter(service.monitor.sets.values())).ready
    service.close()


def test_no_alarm_on_a_long_clean_stream_at_a_short_design_arl(tmp_path):
    # one false alarm per 3650 days at 200/s: the chance of any in these 120,000 clean instances is about
    # 120,000 / (3650 x 86400 x 200) = 2e-6 (the set's false alarms per item sum to at most 1/ARL, tested above)
    broker = MemoryBroker(partitions=1)
    cfg = config(tmp_path, false_alarm_every="3650d")
    service = ChangeService(cfg, "memory:0", None, StandInConsumer(broker, read_committed=True), fresh="beginning")
    rng = np.random.default_rng(11)
    publish([StandInProducer(broker)], rng, 600, 0.05, 0.0)
    assert service.check() == []
    service.close()


def test_an_unreadable_state_is_refused_at_start(tmp_path):
    cfg = config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "changes.json").write_text("{")
    with pytest.raises(ConfigError, match="unreadable"):
        ChangeService(cfg, "memory:0", None, StandInConsumer(MemoryBroker(), read_committed=True))


def test_backtest_over_a_file_of_answers_prints_the_first_alarm_of_the_episode_and_when_it_began(tmp_path, capsys):
    import json
    import re
    from datetime import UTC, datetime

    from adae_stream.cli import main

    rng = np.random.default_rng(0)
    lines, t0, change = [], 1.8e9, 150.0
    for i in range(6000):  # 8 instances per answer, 25 answers/s: 200/s for 4 minutes; 5 % flagged, 12 % from 150 s
        t = (i + 1) * 0.04
        flags = rng.random(8) < (0.05 if t < change else 0.12)
        outputs = [
            {"name": "is_adversarial", "datatype": "BOOL", "shape": [8], "data": flags.tolist()},
            {"name": "no_defense", "datatype": "INT64", "shape": [8], "data": rng.integers(0, 10, 8).tolist()},
            {"name": "corrected", "datatype": "INT64", "shape": [8], "data": rng.integers(0, 10, 8).tolist()},
        ]
        lines.append(json.dumps({"id": f"a{i}", "outputs": outputs, "t": t0 + t}))
    lines.insert(10, "not an answer")
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert (
        main(
            ["backtest", "--config", str(tmp_path / "none.yaml"), "--file", str(path), "--baseline-instances", "10000"]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "line 11 skipped" in err
    alarms = [line for line in out.splitlines() if " change in " in line]
    flag_alarms = [line for line in alarms if "flags/flagged" in line]
    assert len(flag_alarms) == 1, out  # one episode: the alarms that follow it are within 15 minutes

    def at(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp() - t0

    first = min(at(line.split()[0]) for line in alarms)
    began = at(re.search(r"since about (\S+)", flag_alarms[0]).group(1))
    # 5 % -> 12 %: more than 2x, the x2 chart's expected delay a few seconds (3.8 s at 2x, change-detection.md)
    assert change <= first < change + 30 and change - 10 <= began <= at(flag_alarms[0].split()[0])
    assert "6001 answers" not in out and "6000 answers, 48000 instances" in out
