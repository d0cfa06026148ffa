"""Traffic where serving platforms put it, against the real broker and the real process.

Producers and parsers are the ecosystem's own: tritonclient's gRPC protobuf classes and InferResult for
Seldon Core v2, the cloudevents SDK's Kafka binding for KServe's payload logger, tritonclient's HTTP
request builder and response parser for Triton's binary JSON.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections import defaultdict

import numpy as np
import tritonclient.grpc.service_pb2 as triton_pb
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.structs import TopicPartition
from tritonclient.grpc import InferResult
from tritonclient.http import InferenceServerClient, InferInput

from adae_stream.stream.broker import free_port
from tests.answer_checks import assert_answers_match_detector, score_bound
from tests.kafka_helpers import collect, make_config, producer
from tests.platform_helpers import metrics, seldon_request
from tests.process_helpers import PipelineProcess
from tests.waiting import wait_for

FIELDS = ["corrected", "is_adversarial", "instance_score", "no_defense", "defense"]
FRAMING = b"\x00\x00\x00\x00\x05\x00"  # schema-registry framing: magic, schema id 5, message index [0]


def kserve_event(body: bytes, event_id: str, event_type: str = "org.kubeflow.serving.inference.request") -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": event_id,
            "type": event_type,
            "source": "http://digits-predictor-0",
            "specversion": "1.0",
            "datacontenttype": "application/x-www-form-urlencoded",
            "inferenceservicename": "digits",
            "namespace": "prod",
        },
        data=body,
    )


def triton_request(x, rid: str) -> tuple[bytes, list]:
    inp = InferInput("input-0", list(x.shape), "FP32")
    inp.set_data_from_numpy(np.ascontiguousarray(x, np.float32), binary_data=True)
    body, json_length = InferenceServerClient.generate_request_body([inp], request_id=rid)
    return body, [("Inference-Header-Content-Length", str(json_length).encode())]


def parse(rec, family: str) -> tuple[str, dict[str, np.ndarray], dict]:
    """An answer read by the library of its family: (id, fields, headers)."""
    headers = {k: v for k, v in rec.headers}
    if family == "seldon":
        value = rec.value[len(FRAMING) :] if rec.value.startswith(FRAMING) else rec.value
        response = triton_pb.ModelInferResponse.FromString(value)
        if response.raw_output_contents:
            result = InferResult(response)  # tritonclient reads raw contents only
            return response.id, {f: result.as_numpy(f) for f in FIELDS}, headers
        typed = {"INT64": "int64_contents", "BOOL": "bool_contents", "FP32": "fp32_contents"}
        return (
            response.id,
            {o.name: np.asarray(getattr(o.contents, typed[o.datatype])) for o in response.outputs},
            headers,
        )
    if family == "triton":
        parsed = InferenceServerClient.parse_response_body(
            rec.value, header_length=int(headers["inference-header-content-length"])
        )
        return parsed.get_response()["id"], {f: parsed.as_numpy(f) for f in FIELDS}, headers
    msg = ce_kafka.KafkaMessage(headers=headers, key=rec.key, value=rec.value)
    structured = headers["content-type"].startswith(b"application/cloudevents")
    event = (ce_kafka.from_structured if structured else ce_kafka.from_binary)(msg, JSONFormat(), CloudEvent)
    data = event.get_data()
    attrs = event.get_attributes()
    if "predictions" in data:
        fields = {"corrected": np.asarray(data["predictions"]), **{f: np.asarray(data[f]) for f in FIELDS[1:]}}
    else:
        fields = {o["name"]: np.asarray(o["data"]) for o in data["outputs"]}
    return attrs["id"], fields, {**headers, "ce": attrs}


def test_seldon_kserve_triton_answered_in_their_own_families(
    apache_kafka, digits_setup, digits_detector_path, tmp_path
):
    det, X = digits_setup["detector"], digits_setup["Xte"]
    port = free_port()
    cfg = make_config(apache_kafka.bootstrap, digits_detector_path, metrics={"enabled": True, "port": port})
    proc = PipelineProcess(cfg, tmp_path, "platforms").start()
    sent: dict[str, tuple[str, np.ndarray]] = {}  # id -> (family, instances)
    try:
        assert proc.wait_log("partitions assigned", timeout_s=90), proc.text()[-3000:]
        p = producer(apache_kafka.bootstrap)
        topic = cfg.kafka.input_topic
        for i in range(0, 60, 3):
            x = X[i : i + 3]
            kind = (i // 3) % 6
            rid = f"{['raw', 'typed', 'framed', 'ce-bin', 'ce-struct', 'triton'][kind]}-{i}"
            if kind < 3:  # Seldon Core v2: protobuf, correlation headers, sometimes schema-registry framing
                value = seldon_request(x, rid, raw=kind != 1, framing=FRAMING if kind == 2 else b"")
                p.send(
                    topic,
                    value=value,
                    key=f"0.digits.{rid}".encode(),
                    headers=[("pipeline", b"fraud"), ("x-request-id", rid.encode()), ("x-tenant", b"acme")],
                )
                sent[rid] = ("seldon", x)
            elif kind < 5:  # KServe payload logger through Knative: binary or structured CloudEvents, V1 body
                event = kserve_event(json.dumps({"instances": x.tolist()}).encode(), rid)
                msg = (ce_kafka.to_binary if kind == 3 else ce_kafka.to_structured)(event, JSONFormat())
                p.send(topic, value=msg.value, key=None, headers=list(msg.headers.items()))
                sent[rid] = ("kserve", x)
                response = kserve_event(b'{"predictions":[1,2,3]}', rid, "org.kubeflow.serving.inference.response")
                msg = (ce_kafka.to_binary if kind == 3 else ce_kafka.to_structured)(response, JSONFormat())
                p.send(topic, value=msg.value, key=None, headers=list(msg.headers.items()))
            else:  # Triton's binary tensor extension
                body, headers = triton_request(x, rid)
                p.send(topic, value=body, key=rid.encode(), headers=headers)
                sent[rid] = ("triton", x)
        p.flush()
        p.close()
        answers = collect(apache_kafka.bootstrap, cfg.kafka.output_topic, len(sent), timeout_s=90)
        responses = sum(1 for f, _ in sent.values() if f == "kserve")
        seen = wait_for(  # the last acks and skips reach the metrics a moment after the answers
            lambda: (
                (m := metrics(port)).get('adae_requests_total{status="ok"}', 0) >= len(sent)
                and m.get('adae_skipped_total{kind="cloudevent_response"}', 0) >= responses
                and m
            ),
            30,
            "every answer and skipped response counted",
        )
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.cleanup()
    assert not collect(apache_kafka.bootstrap, cfg.kafka.dead_letter_topic, 1, timeout_s=3)
    by_id: dict[str, list] = defaultdict(list)
    for rec in answers:
        content_type = dict(rec.headers)["content-type"]
        family = (
            "seldon"
            if content_type == b"application/x-protobuf"
            else "triton"
            if b"octet-stream" in content_type
            else "kserve"
        )
        rid, fields, headers = parse(rec, family)
        by_id[rid].append((family, fields, headers))
    assert set(by_id) == set(sent)
    for rid, ((family, fields, headers),) in by_id.items():
        assert family == sent[rid][0]
        assert_answers_match_detector(fields, det, sent[rid][1])
        if family == "seldon":
            assert (headers["pipeline"], headers["x-request-id"], headers["x-tenant"]) == (
                b"fraud",
                rid.encode(),
                b"acme",
            )
        if family == "kserve":
            ce = headers["ce"]
            assert ce["type"] == "io.adae-stream.inference.response" and ce["inferenceservicename"] == "digits"
    assert seen['adae_skipped_total{kind="cloudevent_response"}'] == responses
    assert seen['adae_requests_total{status="ok"}'] == len(sent)


def test_monitor_only_tap_of_seldon_topics_by_pattern(apache_kafka, digits_setup, digits_detector_path, tmp_path):
    """Read a copy of a Seldon namespace's model traffic by pattern, publish only flagged instances, never
    write to the tapped topics, and skip the models' .outputs records."""
    det, X = digits_setup["detector"], digits_setup["Xte"]
    ns = f"tap{uuid.uuid4().hex[:6]}"
    tapped = [
        f"seldon.{ns}.model.digits.inputs",
        f"seldon.{ns}.model.digits.outputs",
        f"seldon.{ns}.model.digits-b.inputs",
    ]
    admin = KafkaAdminClient(bootstrap_servers=apache_kafka.bootstrap)
    admin.create_topics([NewTopic(t, 2, 1) for t in tapped])
    admin.close()
    rng = np.random.default_rng(3)
    p = producer(apache_kafka.bootstrap)
    requests: dict[str, np.ndarray] = {}
    for i in range(40):
        x = X[i * 2 : i * 2 + 2].copy()
        if i % 3 == 0:  # corrupted traffic, so some instances are flagged
            x = np.clip(x + rng.normal(0, 0.6, x.shape).astype(np.float32), 0, 1)
        rid = f"m-{i}"
        topic = tapped[0] if i % 2 else tapped[2]
        p.send(topic, value=seldon_request(x, rid), key=rid.encode(), headers=[("pipeline", b"p1")])
        requests[rid] = x
        p.send(tapped[1], value=triton_pb.ModelInferResponse(id=rid).SerializeToString(), key=rid.encode())
    p.flush()
    p.close()
    ends = {t: len(collect(apache_kafka.bootstrap, t, 10**9, timeout_s=10, idle_s=2)) for t in tapped}
    port = free_port()
    cfg = make_config(
        apache_kafka.bootstrap,
        digits_detector_path,
        metrics={"enabled": True, "port": port},
        kafka={"input_pattern": rf"^seldon\.{ns}\.model\..*", "publish": "flagged"},
    )
    proc = PipelineProcess(cfg, tmp_path, "tap").start()
    expected = {rid: np.flatnonzero(det.predict(x)["data"]["is_adversarial"]) for rid, x in requests.items()}
    # which requests are flagged must not hang on float32 rounding (tests/answer_checks.py): none of these
    # fixed instances scores within the bound of the threshold
    scores = det.score(np.concatenate(list(requests.values())))
    assert not np.any(np.abs(scores - det.threshold) <= score_bound(scores))
    flagged_requests = {rid for rid, idx in expected.items() if len(idx)}
    assert 0 < len(flagged_requests) < len(requests)
    try:
        assert proc.wait_log("partitions assigned", timeout_s=90), proc.text()[-3000:]
        answers = collect(apache_kafka.bootstrap, cfg.kafka.output_topic, len(flagged_requests), timeout_s=90)
        seen = wait_for(
            lambda: (
                (m := metrics(port)).get("adae_instances_total", 0) >= 2 * len(requests)
                and m['adae_skipped_total{kind="seldon_response"}'] >= 40
                and m
            ),
            30,
            "every instance scored and every response skipped",
        )
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.cleanup()
    got = {}
    for rec in answers:
        response = triton_pb.ModelInferResponse.FromString(rec.value)
        result = InferResult(response)
        got[response.id] = result
        assert dict(rec.headers)["pipeline"] == b"p1"
    assert set(got) == flagged_requests
    for rid, result in got.items():
        np.testing.assert_array_equal(result.as_numpy("instance_index"), expected[rid])
        assert result.as_numpy("is_adversarial").all()
        fields = {f: result.as_numpy(f) for f in ("is_adversarial", "corrected")}
        assert_answers_match_detector(fields, det, requests[rid][expected[rid]])
    assert seen["adae_instances_total"] == 2 * len(requests)  # every instance scored and exported
    assert seen['adae_skipped_total{kind="seldon_response"}'] == 40
    assert seen['adae_requests_total{status="monitored"}'] == len(requests) - len(flagged_requests)
    # the tapped platform's topics got nothing from us
    assert {t: len(collect(apache_kafka.bootstrap, t, 10**9, timeout_s=10, idle_s=2)) for t in tapped} == ends
    c = KafkaConsumer(bootstrap_servers=apache_kafka.bootstrap, group_id=cfg.kafka.group_id, enable_auto_commit=False)
    committed = sum(c.committed(TopicPartition(t, part)) or 0 for t in tapped for part in range(2))
    c.close()
    assert committed == sum(ends.values())  # and everything read was committed
