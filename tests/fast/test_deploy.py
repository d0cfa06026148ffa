"""deploy/ checked against the code: alert rules (promtool), dashboard and manifests vs real metric names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from adae_stream.changes.charts import ChartSet, Fired
from adae_stream.changes.cusum import Alarm, Chart, design
from adae_stream.changes.metrics import ChangeMetrics
from adae_stream.changes.monitor import FleetMonitor
from adae_stream.config import load_config
from adae_stream.decisions.metrics import DecisionMetrics
from adae_stream.decisions.rules import decide_defense
from adae_stream.feedback.evidence import Counts, PairedEvidence
from adae_stream.feedback.outcome import Outcome, VersionOutcome
from adae_stream.monitoring.metrics import PipelineMetrics
from adae_stream.monitoring.server import MetricsServer
from adae_stream.scoring import ScorerInfo, ServingDetector

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
METRIC_TOKEN = re.compile(r"\badae_[a-zA-Z0-9_]+")


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is required (Debian package 'prometheus'); `make test` installs it"
    return path


@pytest.fixture(scope="module")
def exported_names() -> set[str]:
    """Every sample name the running metrics registry exports, with data in every family."""
    m = PipelineMetrics(threshold=0.1, reference_scores=np.linspace(0, 1, 50), n_classes=3, build_info={"version": "x"})
    m.observe_results(np.array([0.01, 0.5], np.float32), np.array([False, True]), np.array([0, 1]), np.array([0, 2]))
    m.observe_batch(2, 0.001)
    m.request_done("ok", end_to_end_s=0.01)
    m.set_lag("t", 0, 3)
    # a repository's series: a serving and a shadow version, their agreement, feedback and a refused load
    info = ScorerInfo((2,), 0.1, 3, "x", "d1", "c1", reference_scores=np.linspace(0, 1, 50))
    scorer = type("Scorer", (), {"info": info})()
    m.set_detectors({"digits": ServingDetector("digits", 2, scorer, 1, scorer)})
    for role, version in (("serving", 2), ("shadow", 1)):
        m.observe_detector("digits", version, role, np.linspace(0, 0.3, 20, dtype=np.float32), np.arange(20) > 15)
    m.shadow_agreement("digits", np.array([True, False]), np.array([True, True]))
    m.detector_load_failed("digits")
    judged = ({"corrected": 1, "no_defense": 1, "defense": 1}, {("flagged", "wrong"): 1})
    evidence = [
        PairedEvidence("defense", "digits", "2", "2", Counts(1, 0, 0)),
        PairedEvidence("versions", "digits", "2", "1", Counts(0, 1, 0, 1, 0)),
    ]
    versions = [VersionOutcome("digits", "2", "serving", 1, *judged)]
    m.feedback_outcome(Outcome("joined", 1, *judged, versions, evidence=evidence))
    m.update_drift()
    decisions = DecisionMetrics(CollectorRegistry())  # adae-stream decide's own /metrics
    decisions.decisions.labels("digits", "promote").inc()
    decisions.verdict("digits", "defense", decide_defense(Counts(3, 1, 5), 0.05, 1, "corrected"))
    decisions.ledger_records.inc()
    decisions.ledger_skipped.inc()
    decisions.last_check.set(1)
    changes = ChangeMetrics(CollectorRegistry())  # also on decide's /metrics
    alarm = Alarm(1.0, 2.0, 0.05, 0.1, 100)
    changes.fired(Fired("digits", "2", "serving", "flags/flagged", 2.0, alarm))
    monitor = FleetMonitor(load_config(None, environ={}).monitoring)
    monitor.sets[("digits", "2", "serving")] = ChartSet(("digits", "2", "serving"), 1e6, 10, 0.99, [2.0], 0.01)
    monitor.sets[("digits", "2", "serving")].charts[("flags/flagged", 2.0)] = Chart(design(0.05, 2.0, 1e4))
    changes.update(monitor)
    changes.summaries.labels("read").inc()
    changes.check_failures.labels("KafkaError").inc()
    changes.last_check.set(1)
    m.summary_published("sent")
    names = set()
    exposition = "".join(generate_latest(r).decode() for r in (m.registry, decisions.registry, changes.registry))
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_alert_rules_pass_promtool_unit_tests():
    check = subprocess.run(
        [promtool(), "check", "rules", "alerts.yml"], cwd=DEPLOY / "prometheus", capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"], cwd=DEPLOY / "prometheus", capture_output=True, text=True
    )
    assert test.returncode == 0, test.stdout + test.stderr
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    names = {r["alert"] for g in alerts["groups"] for r in g["rules"] if "alert" in r}
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "prometheus" / "alerts_test.yml").read_text()))
    assert names == tested, f"alerts without unit tests: {names - tested}"
    assert {
        "AdaeFlagRateChanged",
        "AdaeScoreShapeChanged",
        "AdaeClassMixChanged",
        "AdaeChangeMonitorStalled",
        "AdaeDeadLetterRate",
        "AdaeConsumerLagGrowing",
        "AdaeNoTraffic",
        "AdaePipelineDown",
        "AdaeDecisionTaken",
        "AdaeEvidenceStalled",
        "AdaeLiveAccuracyDrop",
        "AdaeFeedbackStopped",
        "AdaeDetectorLoadFailed",
    } <= names


def _exprs_in_dashboard(dash: dict) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_reference_exported_metrics(exported_names):
    dash = json.loads((DEPLOY / "grafana" / "adae-stream.json").read_text())
    exprs = _exprs_in_dashboard(dash)
    assert len(exprs) >= 10
    used = {tok for e in exprs for tok in METRIC_TOKEN.findall(e)}
    assert used - exported_names == set()
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("heatmap", "flag rate", "drift", "throughput", "latency", "lag", "dead letter", "shadow", "version"):
        assert topic in titles
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert "adae_detector_info" in variables["detector"]["query"]  # the detector selector
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:q{i}",
                        "expr": e.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$detector", ".*"),
                    }
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    tmp = ROOT / ".pytest_cache" / "dashboard_rules.yml"
    tmp.parent.mkdir(exist_ok=True)
    tmp.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool(), "check", "rules", str(tmp)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_alert_rules_reference_exported_metrics(exported_names):
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    used = {tok for g in alerts["groups"] for r in g["rules"] for tok in METRIC_TOKEN.findall(r["expr"])}
    assert used and used - exported_names == set()


def _k8s_docs() -> list[dict]:
    docs = []
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def test_k8s_manifests_match_the_code():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _k8s_docs()}
    cm = docs[("ConfigMap", "adae-stream-config")]
    cfg = load_config(None, environ={}, overrides=yaml.safe_load(cm["data"]["config.yaml"]))
    dep = docs[("Deployment", "adae-stream")]
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (port,) = container["ports"]
    assert port["containerPort"] == cfg.metrics.port and port["name"] == "metrics"
    assert cfg.metrics.host == "0.0.0.0"  # reachable by probes and scrapes inside the pod network
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["enableServiceLinks"] is False  # no ADAE_STREAM_* service variables in the pod's environment
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    detectors = cfg.detector.repository or cfg.detector.path
    assert "/etc/adae" in mounts and detectors and any(detectors.startswith(m) for m in mounts)
    env = {e["name"]: "x" for e in container.get("env", [])}
    load_config(None, environ=env, overrides=yaml.safe_load(cm["data"]["config.yaml"]))  # env names are real keys
    svc = docs[("Service", "adae-stream")]
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics" and svc["spec"]["ports"][0]["port"] == cfg.metrics.port
    assert docs[("PodMonitor", "adae-stream")]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert docs[("ServiceMonitor", "adae-stream")]["spec"]["endpoints"][0]["port"] == "metrics"
    keda = docs[("ScaledObject", "adae-stream")]
    trig = keda["spec"]["triggers"][0]
    assert trig["type"] == "kafka"
    assert (
        trig["metadata"]["topic"] == cfg.kafka.input_topic and trig["metadata"]["consumerGroup"] == cfg.kafka.group_id
    )
    assert trig["metadata"]["bootstrapServers"] == cfg.kafka.bootstrap_servers
    assert keda["spec"]["maxReplicaCount"] <= cfg.kafka.partitions  # more replicas than partitions would idle
    decide = docs[("Deployment", "adae-decide")]
    assert decide["spec"]["replicas"] == 1 and decide["spec"]["strategy"]["type"] == "Recreate"  # never two
    (decider,) = decide["spec"]["template"]["spec"]["containers"]
    assert decider["command"][:2] == ["adae-stream", "decide"] and "/etc/adae/config.yaml" in decider["command"]
    assert decider["ports"][0]["containerPort"] == cfg.decisions.metrics_port
    writes = {m["mountPath"] for m in decider["volumeMounts"] if not m.get("readOnly")}
    assert cfg.kafka.evidence_topic and any(cfg.detector.repository.startswith(m) for m in writes)
    assert docs[("PodMonitor", "adae-decide")]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    selector = dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"] == selector == dep["spec"]["template"]["metadata"]["labels"]


def test_probe_paths_are_served():
    ready = {"v": False}
    m = PipelineMetrics(threshold=0.1)
    server = MetricsServer(m.registry, "127.0.0.1", 0, ready=lambda: ready["v"]).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert ei.value.code == 503
        ready["v"] = True
        assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
        assert urllib.request.urlopen(base + "/livez", timeout=5).status == 200
        assert b"adae_threshold 0.1" in urllib.request.urlopen(base + "/metrics", timeout=5).read()
    finally:
        server.stop()


def test_docker_compose_wiring():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    svc = compose["services"]
    from tests.apache_kafka import kafka_version

    assert svc["kafka"]["image"] == f"apache/kafka:{kafka_version()}"  # production runs what the tests run
    assert svc["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    env = {k: str(v) for k, v in svc["adae-stream"]["environment"].items()}
    cfg = load_config(ROOT / "config.yaml", environ=env)
    assert cfg.kafka.bootstrap_servers == "kafka:9092" and cfg.metrics.host == "0.0.0.0"
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [f"adae-stream:{cfg.metrics.port}"]
    assert prom["scrape_configs"][0]["job_name"] == "adae-stream"  # the job the alerts select on
    mounts = " ".join(svc["prometheus"]["volumes"])
    assert "alerts.yml" in mounts
    assert "adae-stream.json" in " ".join(svc["grafana"]["volumes"])
    assert (ROOT / svc["adae-stream"]["build"]["context"].replace("..", ".") / "deploy" / "Dockerfile").exists()
