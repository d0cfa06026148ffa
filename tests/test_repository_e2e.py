"""A detector repository served by a real `adae-stream run` process on the real embedded broker.

One process, one repository, in phases: three models on a Seldon namespace pattern (two routed by name, one
by a topic route) and an unrouted one; a new version dropped in under steady load and taken by SIGHUP; a
corrupt version refused while the old one serves; a shadow compared flag by flag with what the two versions
give offline; a removed detector whose traffic becomes unrouted.
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

pytestmark = [pytest.mark.broker, pytest.mark.slow]
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


def test_a_repository_routes_swaps_refuses_shadows_and_removes_live(
    broker, tmp_path, digits_setup, digits_detector_path, iris, iris_detector
):
    Xd = digits_setup["Xte"]
    Xi, _ = iris
    rng = np.random.default_rng(7)
    noisy = np.clip(Xd + rng.normal(0, 0.5, Xd.shape).astype(np.float32), 0, 1)  # some of these are flagged
    shadow_x = np.concatenate([Xd[:30], noisy[:30]])  # what phase 4 sends while version 1 shadows version 2
    repo = tmp_path / "repo"
    shutil.copytree(digits_detector_path, repo / "a" / "1")
    a1 = load_detector(repo / "a" / "1")
    save_detector(iris_detector, repo / "b" / "1")
    c1 = load_detector(digits_detector_path)
    c1.threshold = c1.threshold * 2  # another detector of the same shape, with its own identity
    save_detector(c1, repo / "c" / "1")
    c1 = load_detector(repo / "c" / "1")

    ns = f"ns{uuid.uuid4().hex[:6]}"
    topics = {m: f"seldon.{ns}.model.{m}.inputs" for m in ("a", "b", "legacy", "z")}
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(t, 2, 1) for t in topics.values()])
    admin.close()
    port = free_port()
    cfg = make_config(
        broker.bootstrap,
        "unused",
        metrics={"enabled": True, "port": port},
        kafka={"input_pattern": rf"^seldon\.{ns}\.model\..*\.inputs$", "feedback_topic": f"fb-{ns}"},
        detector={
            "path": None,
            "repository": str(repo),
            "poll_s": 3600,  # only SIGHUP re-reads the repository here, so each phase starts when the test says
            "routes": [{"detector": "c", "topic": r"\.model\.legacy\."}],
        },
        batching={"max_batch_size": 16, "max_batch_delay_ms": 5},
    )
    proc = PipelineProcess(cfg, tmp_path, "repo").start()
    p = producer(broker.bootstrap)
    sent: dict[str, tuple[str, np.ndarray]] = {}  # id -> (topic's model, instances)

    def send(model: str, x: np.ndarray, rid: str) -> None:
        p.send(topics[model], value=seldon_request(x, rid, model=""), key=rid.encode())
        sent[rid] = (model, x)

    answers: dict[str, list] = defaultdict(list)

    def read_answers(expected: int, timeout_s: float = 90) -> None:
        records = collect(broker.bootstrap, cfg.kafka.output_topic, expected, timeout_s=timeout_s)
        answers.clear()
        for rec in records:
            answers[answer(rec)[0]].append((rec, *answer(rec)[1:]))
        assert len(records) >= expected, f"{len(records)} of {expected} answers"

    try:
        assert proc.wait_log("partitions assigned", timeout_s=120), proc.text()[-3000:]
        # ---- 1. routing: by name (a, b), by topic route (legacy -> c), unrouted (z)
        for i in range(12):
            send("a", Xd[i * 2 : i * 2 + 2], f"a-{i}")
            send("b", Xi[i * 3 : i * 3 + 3], f"b-{i}")
            send("legacy", Xd[40 + i : 41 + i], f"l-{i}")
            send("z", Xd[i : i + 1], f"z-{i}")
        p.flush()
        read_answers(36)
        expect = {"a": ("a", a1), "b": ("b", iris_detector), "legacy": ("c", c1)}
        for rid, (model, x) in sent.items():
            if model == "z":
                assert rid not in answers
                continue
            ((_, name, version, fields, detector_id),) = answers[rid]
            assert (name, version) == (expect[model][0], "1")
            assert detector_id.decode() == detector_identity(expect[model][1])["detector_id"]
            assert_answers_match_detector(fields, expect[model][1], x)
        seen = wait_for(
            lambda: (m := metrics(port)).get('adae_skipped_total{kind="unrouted"}', 0) >= 12 and m,
            30,
            "12 unrouted records counted",
        )
        assert seen['adae_skipped_total{kind="unrouted"}'] == 12
        assert sum(v for k, v in seen.items() if k.startswith("adae_dead_letter_total")) == 0
        assert seen['adae_detector_instances_total{detector="a",role="serving",version="1"}'] == 24
        assert seen['adae_detector_instances_total{detector="b",role="serving",version="1"}'] == 36
        assert seen['adae_detector_instances_total{detector="c",role="serving",version="1"}'] == 12

        # ---- 2. a new version under steady load, taken at a batch boundary after SIGHUP
        a2 = load_detector(repo / "a" / "1")
        a2.threshold = threshold_that_flags_differently(a1, shadow_x)
        stop = threading.Event()
        steady: list[str] = []

        def traffic() -> None:
            i = 0
            while not stop.is_set():
                rid = f"s-{i}"
                send("a", Xd[i % 200 : i % 200 + 2], rid)
                steady.append(rid)
                i += 1
                stop.wait(0.02)

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        wait_for(lambda: len(collect(broker.bootstrap, cfg.kafka.output_topic, 56, timeout_s=5)) >= 56, 60, "load")
        save_detector(a2, repo / "a" / "2")  # atomic: a temp dir renamed into place
        a2 = load_detector(repo / "a" / "2")
        proc.signal(signal.SIGHUP)
        assert proc.wait_log("detector a: version 2 serves", timeout_s=60), proc.text()[-3000:]
        assert proc.wait_log("detectors changed: a: version 2", timeout_s=30), proc.text()[-3000:]
        at_swap = len(steady)
        wait_for(lambda: len(steady) >= at_swap + 25, 30, "steady traffic after the swap")
        stop.set()
        sender.join(10)
        p.flush()
        read_answers(36 + len(steady))
        by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for rid in steady:
            assert len(answers[rid]) == 1, f"{rid} answered {len(answers[rid])} times"
            ((rec, name, version, fields, detector_id),) = answers[rid]
            assert name == "a"
            det = a1 if version == "1" else a2
            assert detector_id.decode() == detector_identity(det)["detector_id"]
            assert_answers_match_detector(fields, det, sent[rid][1])
            by_partition[rec.partition].append((rec.offset, version))
        versions = [v for part in by_partition.values() for _, v in sorted(part)]
        assert {"1", "2"} <= set(versions)
        for part in by_partition.values():
            order = [v for _, v in sorted(part)]
            assert order == sorted(order), f"versions do not switch at one point: {order}"

        # ---- 3. a corrupt version is refused; version 2 keeps serving
        shutil.copytree(repo / "a" / "2", tmp_path / "a3")
        (tmp_path / "a3" / "ae.keras").write_bytes(b"not a keras file")
        shutil.move(tmp_path / "a3", repo / "a" / "3")
        proc.signal(signal.SIGHUP)
        assert proc.wait_log("detector a version 3 could not be loaded", timeout_s=60), proc.text()[-3000:]
        wait_for(lambda: metrics(port).get('adae_detector_load_failures_total{detector="a"}') == 1, 30, "load failure")
        for i in range(5):
            send("a", Xd[i : i + 1], f"after-corrupt-{i}")
        p.flush()
        read_answers(36 + len(steady) + 5)
        for i in range(5):
            ((_, _, version, _, _),) = answers[f"after-corrupt-{i}"]
            assert version == "2"

        # ---- 4. shadow: version 1 scored beside version 2, compared flag by flag
        (repo / "a" / "policy.yaml").write_text("serve: 2\nshadow: 1\n")
        proc.signal(signal.SIGHUP)
        assert proc.wait_log("version 1 shadows", timeout_s=60), proc.text()[-3000:]
        assert proc.wait_log("detectors changed:", count=2, timeout_s=30), proc.text()[-3000:]
        for i in range(0, 60, 3):
            send("a", shadow_x[i : i + 3], f"shadow-{i}")
        p.flush()
        serving_answers, shadow_answers = unambiguous(a2, shadow_x), unambiguous(a1, shadow_x)
        serving_flags = serving_answers["is_adversarial"].astype(bool)
        shadow_flags = shadow_answers["is_adversarial"].astype(bool)
        assert (serving_flags != shadow_flags).any() and serving_flags.any()  # the comparison says something
        expected = {
            (s, c): int(np.sum((serving_flags == (s == "flagged")) & (shadow_flags == (c == "flagged"))))
            for s in ("flagged", "unflagged")
            for c in ("flagged", "unflagged")
        }

        def agreement():
            m = metrics(port)
            got = {
                (s, c): m.get(f'adae_shadow_agreement_total{{detector="a",serving="{s}",shadow="{c}"}}', 0)
                for s, c in expected
            }
            return got if sum(got.values()) >= 60 else None

        assert wait_for(agreement, 30, "the shadow scored 60 instances") == expected
        seen = metrics(port)
        assert seen['adae_detector_instances_total{detector="a",role="shadow",version="1"}'] == 60
        read_answers(36 + len(steady) + 5 + 20)
        for i in range(0, 60, 3):  # the shadow never answers: one answer each, from version 2
            ((_, _, version, _, _),) = answers[f"shadow-{i}"]
            assert version == "2"
        # labels for those requests: live accuracy of the serving and the shadow version, side by side
        y = np.concatenate([digits_setup["yte"][:30], digits_setup["yte"][:30]])
        for i in range(0, 60, 3):
            p.send(f"fb-{ns}", value=json.dumps({"id": f"shadow-{i}", "labels": y[i : i + 3].tolist()}).encode())
        p.flush()
        feedback = 'adae_detector_feedback_correct_total{{detector="a",prediction="corrected",role="{}",version="{}"}}'
        got = wait_for(
            lambda: (
                (m := metrics(port)).get(
                    'adae_detector_feedback_instances_total{detector="a",role="shadow",version="1"}'
                )
                == 60
                and m
            ),
            30,
            "60 labelled instances joined with the shadow",
        )
        assert got['adae_detector_feedback_instances_total{detector="a",role="serving",version="2"}'] == 60
        assert got[feedback.format("serving", "2")] == int(np.sum(serving_answers["corrected"] == y))
        assert got[feedback.format("shadow", "1")] == int(np.sum(shadow_answers["corrected"] == y))
        flagged = (
            "adae_detector_feedback_flag_instances_total"
            '{{detector="a",flag="flagged",role="{}",undefended="{}",version="{}"}}'
        )
        for role, version, flags in (("serving", "2", serving_flags), ("shadow", "1", shadow_flags)):
            # the two versions flag differently (asserted above), so each role's counts are its own
            assert sum(got[flagged.format(role, u, version)] for u in ("wrong", "correct")) == int(flags.sum())

        # ---- 5. a detector with no version left: its traffic becomes unrouted
        shutil.rmtree(repo / "b")
        proc.signal(signal.SIGHUP)
        assert proc.wait_log("detector b: no version left", timeout_s=60), proc.text()[-3000:]
        assert proc.wait_log("b: removed", timeout_s=30), proc.text()[-3000:]
        for i in range(5):
            send("b", Xi[i : i + 1], f"b-after-{i}")
        p.flush()
        wait_for(lambda: metrics(port).get('adae_skipped_total{kind="unrouted"}') == 17, 30, "5 more unrouted")
        assert 'adae_detector_instances_total{detector="b",role="serving",version="1"}' not in metrics(port)
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        p.close()
        proc.cleanup()
    assert not collect(broker.bootstrap, cfg.kafka.dead_letter_topic, 1, timeout_s=3)
