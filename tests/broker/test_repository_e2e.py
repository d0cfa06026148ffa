"""A detector repository served by a real `adae-stream run` process on the real embedded broker.

One test per behaviour, each with its own repository, process and Seldon namespace: routing (by name, by a
topic route, unrouted); a new version dropped in under steady load and taken by SIGHUP; a corrupt version
refused while the old one serves; a shadow compared flag by flag with what the two versions give offline
and joined with labels; a removed detector whose traffic becomes unrouted.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import uuid
from collections import defaultdict

import numpy as np
import pytest
import tritonclient.grpc.service_pb2 as triton_pb
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from adae_stream import AdversarialAE, load_detector, save_detector
from adae_stream.detector.identity import detector_identity
from adae_stream.stream.broker import free_port
from tests.answer_checks import assert_answers_match_detector, near_tie, score_bound
from tests.conftest import iris_ae_nets
from tests.kafka_helpers import collect, make_config, producer
from tests.platform_helpers import metrics, seldon_request
from tests.process_helpers import PipelineProcess
from tests.waiting import wait_for

FIELDS = ("corrected", "is_adversarial", "instance_score", "no_defense", "defense")


def answer(rec) -> tuple[str, str, str, dict[str, np.ndarray], bytes]:
    response = triton_pb.ModelInferResponse.FromString(rec.value)
    dtypes = {"INT64": "<i8", "BOOL": "?", "FP32": "<f4"}
    fields = {
        out.name: np.frombuffer(raw, dtypes[out.datatype])
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    return response.id, response.model_name, response.model_version, fields, dict(rec.headers)["adae-detector-id"]


def unambiguous(det, x) -> dict[str, np.ndarray]:
    """The detector's answers on x, checked to be no float32 coin toss (tests/answer_checks.py): no score on
    the threshold, no top-two tie, so counts over them can be compared exactly."""
    scores, p, q = det.score(x, return_predictions=True)
    assert not np.any(np.abs(scores - det.threshold) <= score_bound(scores)), "an instance sits on the threshold"
    assert not (near_tie(p).any() or near_tie(q).any()), "an instance's top two classes tie"
    return det.correct(x)["data"]


def threshold_that_flags_differently(det, x) -> float:
    """A threshold that flags a quarter of x more or less than det's own does (so the shadow comparison
    has disagreements to count whatever the trained detector scores), between two scores that lie
    further apart than the float32 bound (tests/answer_checks.py), so no instance sits on it."""
    scores = np.sort(det.score(x).astype(np.float64))
    flagged = float(np.mean(scores > det.threshold))
    i = int(len(scores) * (0.25 if flagged > 0.5 else 0.75))
    while not scores[i + 1] - scores[i] > 4 * score_bound(scores[i + 1]):
        i += -1 if flagged <= 0.5 else 1  # toward the middle, away from the ends
    return float((scores[i] + scores[i + 1]) / 2)


@pytest.fixture(scope="module")
def iris_detector(iris, iris_model):
    X, _ = iris
    enc, dec = iris_ae_nets()
    det = AdversarialAE(encoder_net=enc, decoder_net=dec, model=iris_model)
    det.fit(X, epochs=3, verbose=False)
    det.infer_threshold(X, threshold_perc=90)
    return det


class Service:
    """A repository served by its own process, reading ``models``' Seldon topics in a fresh namespace."""

    def __init__(self, broker, tmp_path, repo, models, routes=()) -> None:
        self.bootstrap = broker.bootstrap
        ns = f"ns{uuid.uuid4().hex[:6]}"
        self.topics = {m: f"seldon.{ns}.model.{m}.inputs" for m in models}
        self.feedback_topic = f"fb-{ns}"
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic(t, 2, 1) for t in self.topics.values()])
        admin.close()
        self.port = free_port()
        self.cfg = make_config(
            broker.bootstrap,
            "unused",
            metrics={"enabled": True, "port": self.port},
            kafka={"input_pattern": rf"^seldon\.{ns}\.model\..*\.inputs$", "feedback_topic": self.feedback_topic},
            detector={
                "path": None,
                "repository": str(repo),
                "poll_s": 3600,  # only SIGHUP re-reads the repository, so each change happens when the test says
                "routes": list(routes),
            },
            batching={"max_batch_size": 16, "max_batch_delay_ms": 5},
        )
        self.proc = PipelineProcess(self.cfg, tmp_path, "repo").start()
        self.producer = producer(broker.bootstrap)
        self.sent: dict[str, tuple[str, np.ndarray]] = {}  # id -> (topic's model, instances)
        assert self.proc.wait_log("partitions assigned", timeout_s=120), self.proc.text()[-3000:]

    def send(self, model: str, x: np.ndarray, rid: str) -> None:
        self.producer.send(self.topics[model], value=seldon_request(x, rid, model=""), key=rid.encode())
        self.sent[rid] = (model, x)

    def answers(self, expected: int, timeout_s: float = 90) -> dict[str, list]:
        self.producer.flush()
        records = collect(self.bootstrap, self.cfg.kafka.output_topic, expected, timeout_s=timeout_s)
        assert len(records) >= expected, f"{len(records)} of {expected} answers"
        answers: dict[str, list] = defaultdict(list)
        for rec in records:
            answers[answer(rec)[0]].append((rec, *answer(rec)[1:]))
        return answers

    def metrics(self) -> dict[str, float]:
        return metrics(self.port)

    def reload(self, *log_lines: str) -> None:
        """SIGHUP, then wait for each line in the log (the repository's verdict, then the loop taking it)."""
        self.proc.signal(signal.SIGHUP)
        for line in log_lines:
            assert self.proc.wait_log(line, timeout_s=60), self.proc.text()[-3000:]

    def stop(self) -> None:
        """A clean stop, and nothing was dead-lettered."""
        self.proc.signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0
        assert not collect(self.bootstrap, self.cfg.kafka.dead_letter_topic, 1, timeout_s=3)

    def close(self) -> None:
        self.producer.close()
        self.proc.cleanup()


@pytest.fixture
def serve(broker, tmp_path):
    services: list[Service] = []

    def start(repo, models, routes=()) -> Service:
        services.append(Service(broker, tmp_path, repo, models, routes))
        return services[-1]

    yield start
    for service in services:
        service.close()


@pytest.fixture
def noisy_digits(digits_setup) -> np.ndarray:
    Xd = digits_setup["Xte"]
    rng = np.random.default_rng(7)
    noisy = np.clip(Xd + rng.normal(0, 0.5, Xd.shape).astype(np.float32), 0, 1)  # some of these are flagged
    return np.concatenate([Xd[:30], noisy[:30]])


def test_requests_are_routed_by_model_name_and_topic_route_and_others_are_unrouted(
    serve, tmp_path, digits_setup, digits_detector_path, iris, iris_detector
):
    Xd, (Xi, _) = digits_setup["Xte"], iris
    repo = tmp_path / "repo"
    shutil.copytree(digits_detector_path, repo / "a" / "1")
    a1 = load_detector(repo / "a" / "1")
    save_detector(iris_detector, repo / "b" / "1")
    c1 = load_detector(digits_detector_path)
    c1.threshold = c1.threshold * 2  # another detector of the same shape, with its own identity
    save_detector(c1, repo / "c" / "1")
    c1 = load_detector(repo / "c" / "1")
    service = serve(repo, ("a", "b", "legacy", "z"), routes=[{"detector": "c", "topic": r"\.model\.legacy\."}])
    for i in range(12):
        service.send("a", Xd[i * 2 : i * 2 + 2], f"a-{i}")
        service.send("b", Xi[i * 3 : i * 3 + 3], f"b-{i}")
        service.send("legacy", Xd[40 + i : 41 + i], f"l-{i}")
        service.send("z", Xd[i : i + 1], f"z-{i}")
    answers = service.answers(36)
    expect = {"a": ("a", a1), "b": ("b", iris_detector), "legacy": ("c", c1)}
    for rid, (model, x) in service.sent.items():
        if model == "z":
            assert rid not in answers
            continue
        ((_, name, version, fields, detector_id),) = answers[rid]
        assert (name, version) == (expect[model][0], "1")
        assert detector_id.decode() == detector_identity(expect[model][1])["detector_id"]
        assert_answers_match_detector(fields, expect[model][1], x)
    seen = wait_for(
        lambda: (m := service.metrics()).get('adae_skipped_total{kind="unrouted"}', 0) >= 12 and m,
        30,
        "12 unrouted records counted",
    )
    assert seen['adae_skipped_total{kind="unrouted"}'] == 12
    assert sum(v for k, v in seen.items() if k.startswith("adae_dead_letter_total")) == 0
    assert seen['adae_detector_instances_total{detector="a",role="serving",version="1"}'] == 24
    assert seen['adae_detector_instances_total{detector="b",role="serving",version="1"}'] == 36
    assert seen['adae_detector_instances_total{detector="c",role="serving",version="1"}'] == 12
    service.stop()


def test_a_new_version_under_load_takes_over_at_one_point_in_each_partition(
    serve, tmp_path, digits_setup, digits_detector_path, noisy_digits
):
    Xd = digits_setup["Xte"]
    repo = tmp_path / "repo"
    shutil.copytree(digits_detector_path, repo / "a" / "1")
    a1 = load_detector(repo / "a" / "1")
    a2 = load_detector(repo / "a" / "1")
    a2.threshold = threshold_that_flags_differently(a1, noisy_digits)
    service = serve(repo, ("a",))
    stop = threading.Event()
    steady: list[str] = []

    def traffic() -> None:
        i = 0
        while not stop.is_set():
            rid = f"s-{i}"
            service.send("a", Xd[i % 200 : i % 200 + 2], rid)
            steady.append(rid)
            i += 1
            stop.wait(0.02)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        wait_for(
            lambda: len(collect(service.bootstrap, service.cfg.kafka.output_topic, 20, timeout_s=5)) >= 20, 60, "load"
        )
        save_detector(a2, repo / "a" / "2")  # atomic: a temp dir renamed into place
        a2 = load_detector(repo / "a" / "2")
        service.reload("detector a: version 2 serves", "detectors changed: a: version 2")
        at_swap = len(steady)
        wait_for(lambda: len(steady) >= at_swap + 25, 30, "steady traffic after the swap")
    finally:
        stop.set()
        sender.join(10)
    answers = service.answers(len(steady))
    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for rid in steady:
        assert len(answers[rid]) == 1, f"{rid} answered {len(answers[rid])} times"
        ((rec, name, version, fields, detector_id),) = answers[rid]
        assert name == "a"
        det = a1 if version == "1" else a2
        assert detector_id.decode() == detector_identity(det)["detector_id"]
        assert_answers_match_detector(fields, det, service.sent[rid][1])
        by_partition[rec.partition].append((rec.offset, version))
    versions = [v for part in by_partition.values() for _, v in sorted(part)]
    assert {"1", "2"} <= set(versions)
    for part in by_partition.values():
        order = [v for _, v in sorted(part)]
        assert order == sorted(order), f"versions do not switch at one point: {order}"
    service.stop()


def test_a_corrupt_version_is_refused_and_the_serving_one_goes_on(serve, tmp_path, digits_setup, digits_detector_path):
    Xd = digits_setup["Xte"]
    repo = tmp_path / "repo"
    shutil.copytree(digits_detector_path, repo / "a" / "1")
    service = serve(repo, ("a",))
    shutil.copytree(repo / "a" / "1", tmp_path / "a2")
    (tmp_path / "a2" / "ae.keras").write_bytes(b"not a keras file")
    shutil.move(tmp_path / "a2", repo / "a" / "2")
    service.reload("detector a version 2 could not be loaded")
    wait_for(lambda: service.metrics().get('adae_detector_load_failures_total{detector="a"}') == 1, 30, "load failure")
    for i in range(5):
        service.send("a", Xd[i : i + 1], f"after-corrupt-{i}")
    answers = service.answers(5)
    assert [answers[f"after-corrupt-{i}"][0][2] for i in range(5)] == ["1"] * 5
    service.stop()


def test_a_shadow_is_scored_beside_the_serving_version_never_answers_and_is_joined_with_labels(
    serve, tmp_path, digits_setup, digits_detector_path, noisy_digits
):
    repo = tmp_path / "repo"
    shutil.copytree(digits_detector_path, repo / "a" / "1")
    a1 = load_detector(repo / "a" / "1")
    a2 = load_detector(repo / "a" / "1")
    a2.threshold = threshold_that_flags_differently(a1, noisy_digits)
    save_detector(a2, repo / "a" / "2")
    a2 = load_detector(repo / "a" / "2")
    (repo / "a" / "policy.yaml").write_text("serve: 2\nshadow: 1\n")
    service = serve(repo, ("a",))
    assert service.proc.wait_log("version 1 shadows", timeout_s=60), service.proc.text()[-3000:]
    for i in range(0, 60, 3):
        service.send("a", noisy_digits[i : i + 3], f"shadow-{i}")
    serving_answers, shadow_answers = unambiguous(a2, noisy_digits), unambiguous(a1, noisy_digits)
    serving_flags = serving_answers["is_adversarial"].astype(bool)
    shadow_flags = shadow_answers["is_adversarial"].astype(bool)
    assert (serving_flags != shadow_flags).any() and serving_flags.any()  # the comparison says something
    expected = {
        (s, c): int(np.sum((serving_flags == (s == "flagged")) & (shadow_flags == (c == "flagged"))))
        for s in ("flagged", "unflagged")
        for c in ("flagged", "unflagged")
    }

    def agreement():
        m = service.metrics()
        got = {
            (s, c): m.get(f'adae_shadow_agreement_total{{detector="a",serving="{s}",shadow="{c}"}}', 0)
            for s, c in expected
        }
        return got if sum(got.values()) >= 60 else None

    assert wait_for(agreement, 30, "the shadow scored 60 instances") == expected
    assert service.metrics()['adae_detector_instances_total{detector="a",role="shadow",version="1"}'] == 60
    answers = service.answers(20)
    for i in range(0, 60, 3):  # the shadow never answers: one answer each, from version 2
        ((_, _, version, _, _),) = answers[f"shadow-{i}"]
        assert version == "2"
    # labels for those requests: live accuracy of the serving and the shadow version, side by side
    y = np.concatenate([digits_setup["yte"][:30], digits_setup["yte"][:30]])
    for i in range(0, 60, 3):
        service.producer.send(
            service.feedback_topic, value=json.dumps({"id": f"shadow-{i}", "labels": y[i : i + 3].tolist()}).encode()
        )
    service.producer.flush()
    feedback = 'adae_detector_feedback_correct_total{{detector="a",prediction="corrected",role="{}",version="{}"}}'
    instances = 'adae_detector_feedback_instances_total{{detector="a",role="{}",version="{}"}}'
    got = wait_for(
        lambda: (m := service.metrics()).get(instances.format("shadow", "1")) == 60 and m,
        30,
        "60 labelled instances joined with the shadow",
    )
    assert got[instances.format("serving", "2")] == 60
    assert got[feedback.format("serving", "2")] == int(np.sum(serving_answers["corrected"] == y))
    assert got[feedback.format("shadow", "1")] == int(np.sum(shadow_answers["corrected"] == y))
    flagged = (
        "adae_detector_feedback_flag_instances_total"
        '{{detector="a",flag="flagged",role="{}",undefended="{}",version="{}"}}'
    )
    for role, version, flags in (("serving", "2", serving_flags), ("shadow", "1", shadow_flags)):
        # the two versions flag differently (asserted above), so each role's counts are its own
        assert sum(got[flagged.format(role, u, version)] for u in ("wrong", "correct")) == int(flags.sum())
    service.stop()


def test_a_detector_with_no_version_left_stops_serving_and_its_traffic_is_unrouted(
    serve, tmp_path, digits_detector_path, iris, iris_detector
):
    Xi, _ = iris
    repo = tmp_path / "repo"
    shutil.copytree(digits_detector_path, repo / "a" / "1")
    save_detector(iris_detector, repo / "b" / "1")
    service = serve(repo, ("b",))
    service.send("b", Xi[:2], "b-before")
    service.answers(1)
    shutil.rmtree(repo / "b")
    service.reload("detector b: no version left", "b: removed")
    for i in range(5):
        service.send("b", Xi[i : i + 1], f"b-after-{i}")
    service.producer.flush()
    wait_for(lambda: service.metrics().get('adae_skipped_total{kind="unrouted"}') == 5, 30, "5 unrouted")
    assert 'adae_detector_instances_total{detector="b",role="serving",version="1"}' not in service.metrics()
    service.stop()
