"""The feedback loop end to end: real apache_kafka, real pipeline process, real Prometheus.

The metrics Prometheus scrapes must equal what the answers on the output topic and the labels say,
with duplicates, unknown ids and malformed feedback in the mix, and again after a restart for labels
of answers given before it (the join reads the output topic again from now minus the window). Flagged
requests are captured on the flagged topic with their input data.
"""

from __future__ import annotations

import json
import signal

import numpy as np

from adae_stream.codecs import decode_response
from adae_stream.detector.attacks import fgsm
from adae_stream.stream.broker import free_port
from tests.kafka_helpers import collect, make_config, produce_requests, producer
from tests.process_helpers import PipelineProcess
from tests.prometheus_helpers import Prometheus

PREDICTIONS = ("no_defense", "defense", "corrected")


def expected(answers: dict[str, dict], labels: dict[str, np.ndarray]) -> dict[str, float]:
    """What the metrics must say for these labels joined with these answers (each request once)."""
    out = {
        "instances": 0.0,
        **{p: 0.0 for p in PREDICTIONS},
        **{f"{f}/{u}": 0.0 for f in ("flagged", "unflagged") for u in ("wrong", "correct")},
    }
    for rid, y in labels.items():
        a = answers[rid]
        out["instances"] += len(y)
        for p in PREDICTIONS:
            out[p] += float((a[p] == y).sum())
        wrong = a["no_defense"] != y
        flagged = a["is_adversarial"].astype(bool)
        for f, fm in (("flagged", flagged), ("unflagged", ~flagged)):
            for u, um in (("wrong", wrong), ("correct", ~wrong)):
                out[f"{f}/{u}"] += float((fm & um).sum())
    return out


def send_feedback(bootstrap: str, topic: str, items: list[tuple[str, list[int]]], raw: list[bytes] = ()) -> None:
    p = producer(bootstrap)
    for rid, y in items:
        p.send(topic, value=json.dumps({"id": rid, "labels": y}).encode(), key=rid.encode())
    for value in raw:
        p.send(topic, value=value)
    p.flush()
    p.close()


def check_metrics(prom: Prometheus, want: dict[str, float], records: dict[str, float]) -> None:
    total = sum(records.values())
    assert (
        prom.wait_for("sum(adae_feedback_records_total)", lambda v: v is not None and v >= total, timeout_s=60) == total
    )
    assert prom.query("sum(adae_feedback_instances_total)") == want["instances"]
    for p in PREDICTIONS:
        assert prom.query(f'adae_feedback_correct_total{{prediction="{p}"}}') == want[p], p
    for key in ("flagged/wrong", "flagged/correct", "unflagged/wrong", "unflagged/correct"):
        flag, undefended = key.split("/")
        assert (
            prom.query(f'adae_feedback_flag_instances_total{{flag="{flag}",undefended="{undefended}"}}') == want[key]
        ), key
    for result, n in records.items():
        assert prom.query(f'adae_feedback_records_total{{result="{result}"}}') == n, result


def test_feedback_metrics_equal_answers_and_labels_across_a_restart(
    apache_kafka, digits_setup, digits_detector_path, tmp_path
):
    clf, Xte, yte = digits_setup["clf"], digits_setup["Xte"], digits_setup["yte"]
    port = free_port()
    cfg = make_config(
        apache_kafka.bootstrap,
        digits_detector_path,
        metrics={"enabled": True, "port": port},
        kafka={"feedback_topic": "fb-" + str(port), "flagged_topic": "flagged-" + str(port)},
    )
    proc = PipelineProcess(cfg, tmp_path, "feedback").start()
    prom = None
    try:
        assert proc.wait_log("partitions assigned", timeout_s=90), proc.text()[-3000:]
        prom = Prometheus(tmp_path, [f"127.0.0.1:{port}"])
        clean = produce_requests(
            apache_kafka.bootstrap, cfg.kafka.input_topic, Xte[:160], "v2", batch=4, prefix="clean"
        )
        adv = produce_requests(
            apache_kafka.bootstrap,
            cfg.kafka.input_topic,
            fgsm(clf, Xte[160:240], yte[160:240], eps=0.2),
            "npy",
            batch=4,
            prefix="adv",
        )
        truth = {f"clean-{i}": yte[i * 4 : i * 4 + 4] for i in range(40)} | {
            f"adv-{i}": yte[160 + i * 4 : 164 + i * 4] for i in range(20)
        }
        sent = clean | adv
        answers = {}
        for rec in collect(apache_kafka.bootstrap, cfg.kafka.output_topic, len(sent), timeout_s=90):
            a = decode_response(rec.value, rec.headers)
            answers[a["id"]] = a
        assert set(answers) == set(sent)

        # phase 1: labels for most requests, duplicates, unknown ids, malformed feedback
        first = sorted(sent)[:45]
        later = sorted(sent)[45:]
        items = [(rid, truth[rid].tolist()) for rid in first]
        items += items[:7]  # duplicates: counted once
        items += [(f"never-{i}", [1, 2, 3, 4]) for i in range(5)]  # unknown
        malformed = [b"not json", b'{"id": "clean-0"}', json.dumps({"id": first[0], "labels": [1]}).encode()]
        send_feedback(apache_kafka.bootstrap, cfg.kafka.feedback_topic, items, malformed)
        check_metrics(
            prom,
            expected(answers, {rid: truth[rid] for rid in first}),
            {"joined": 45, "duplicate": 7, "unknown": 5, "late": 0, "dead_letter": 3},
        )
        dlq = collect(apache_kafka.bootstrap, cfg.kafka.dead_letter_topic, 3, timeout_s=30)
        assert sorted(dict(r.headers)["error-reason"] for r in dlq) == [b"decode", b"schema", b"shape"]

        # flagged captures: every request with a flagged instance, with its flagged inputs
        flagged_ids = {rid for rid, a in answers.items() if a["is_adversarial"].any()}
        assert flagged_ids and len(flagged_ids) < len(sent)
        captures = collect(apache_kafka.bootstrap, cfg.kafka.flagged_topic, len(flagged_ids), timeout_s=30)
        by_id = {decode_response(r.value, r.headers)["id"]: (r, decode_response(r.value, r.headers)) for r in captures}
        assert set(by_id) == flagged_ids
        for rid, (rec, cap) in by_id.items():
            idx = np.flatnonzero(answers[rid]["is_adversarial"])
            np.testing.assert_array_equal(cap["instance_index"], idx)
            np.testing.assert_allclose(
                cap["input"].reshape(len(idx), -1), sent[rid][idx].reshape(len(idx), -1), rtol=1e-6
            )
            np.testing.assert_allclose(cap["instance_score"], answers[rid]["instance_score"][idx], rtol=1e-6)
            assert dict(rec.headers)["source-topic"] == cfg.kafka.input_topic.encode()

        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0

        # phase 2: a restart, then labels for answers given before it; the join comes back from the output topic
        proc.start()
        assert proc.wait_log("feedback join rebuilt", timeout_s=90), proc.text()[-3000:]
        assert f"{len(sent)} answers" in proc.text().split("feedback join rebuilt", 1)[1].split("\n", 1)[0]
        assert proc.wait_log("partitions assigned", timeout_s=90)
        send_feedback(
            apache_kafka.bootstrap,
            cfg.kafka.feedback_topic,
            [(rid, truth[rid].tolist()) for rid in later] + [(first[0], truth[first[0]].tolist())],
        )
        # the relabel of first[0] joins again: per-instance dedup lives with the answer, which was rebuilt unlabelled
        check_metrics(
            prom,
            expected(answers, {rid: truth[rid] for rid in [*later, first[0]]}),
            {"joined": len(later) + 1, "duplicate": 0, "unknown": 0, "late": 0, "dead_letter": 0},
        )
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.cleanup()
        if prom is not None:
            prom.stop()
