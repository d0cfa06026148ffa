"""Seldon Core v2 protobuf, KServe CloudEvents and Triton binary JSON, without a broker.

Requests are built and answers parsed by the ecosystem's own libraries (tritonclient's HTTP request
builder and response parser, tritonclient's gRPC protobuf classes and InferResult, the cloudevents SDK's
Kafka binding), never by our own client helpers, so each test checks interoperability, not symmetry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.service_pb2 as triton_pb
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from tritonclient.grpc import InferResult
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

from adae_stream.codecs import RESULT_DTYPES, RawRecord, decode, decode_response, encode
from adae_stream.errors import DecodeError, NotARequest
from tests.answer_info import ANSWER_INFO

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (4,)
MAX = 1 << 20
INFO = {**ANSWER_INFO, "model_name": "adae", "detector_version": "9.9", "threshold": 0.25}
X = (np.arange(12, dtype=np.float32).reshape(3, 4) - 5) / 3
FIELDS = ["prediction", "corrected", "is_adversarial", "instance_score", "no_defense", "defense"]


def result_for(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    corrected = rng.integers(0, 3, n).astype(np.int64)
    return {
        "prediction": corrected,
        "corrected": corrected,
        "is_adversarial": rng.random(n) > 0.5,
        "instance_score": rng.random(n).astype(np.float32),
        "no_defense": rng.integers(0, 3, n).astype(np.int64),
        "defense": rng.integers(0, 3, n).astype(np.int64),
    }


def record(value: bytes, headers=(), topic: str = "in", key: bytes | None = b"k") -> RawRecord:
    return RawRecord(topic, 0, 7, key, value, list(headers), 1000)


def answer(value: bytes, headers=(), topic: str = "in"):
    req = decode(record(value, headers, topic), SHAPE, MAX)
    res = result_for(req.n)
    payload, out_headers = encode(req, res, INFO)
    return req, res, payload, dict(out_headers), out_headers


# ------------------------------------------------------------------ Triton binary tensor extension
def triton_request(x, binary_in: bool, outputs=None, request_id="t1"):
    inp = InferInput("input-0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    body, json_length = InferenceServerClient.generate_request_body([inp], outputs=outputs, request_id=request_id)
    headers = [("Inference-Header-Content-Length", str(json_length).encode())] if json_length else []
    return body, [*headers, ("content-type", b"application/octet-stream" if json_length else b"application/json")]


@pytest.mark.parametrize("with_length_header", [True, False])
def test_triton_binary_request_all_outputs_binary(with_length_header):
    body, headers = triton_request(X, binary_in=True)  # tritonclient asks binary_data_output by default
    if not with_length_header:
        headers = [h for h in headers if h[0] != "Inference-Header-Content-Length"]
    req, res, payload, hdr, _ = answer(body, headers)
    np.testing.assert_array_equal(req.instances, X)
    assert req.id == "t1" and req.fmt == "v2"
    parsed = InferenceServerClient.parse_response_body(
        payload, header_length=int(hdr["inference-header-content-length"])
    )
    assert parsed.get_response()["id"] == "t1"
    for name in FIELDS:
        np.testing.assert_array_equal(parsed.as_numpy(name), res[name])
        assert "data" not in parsed.get_output(name)  # all in the binary tail


def test_triton_per_output_binary_choice():
    outputs = [
        InferRequestedOutput("corrected", binary_data=True),
        InferRequestedOutput("instance_score", binary_data=False),
    ]
    body, headers = triton_request(X, binary_in=True, outputs=outputs)
    _, res, payload, hdr, _ = answer(body, headers)
    parsed = InferenceServerClient.parse_response_body(
        payload, header_length=int(hdr["inference-header-content-length"])
    )
    assert parsed.get_output("corrected")["parameters"]["binary_data_size"] == 3 * 8
    assert parsed.get_output("instance_score")["data"] == pytest.approx(res["instance_score"].tolist())
    for name in FIELDS:
        np.testing.assert_array_equal(parsed.as_numpy(name), res[name])


def test_triton_json_request_gets_a_json_answer():
    body, headers = triton_request(X, binary_in=False, outputs=[InferRequestedOutput("corrected", binary_data=False)])
    req, res, payload, hdr, _ = answer(body, headers)
    np.testing.assert_allclose(req.instances, X)
    assert "inference-header-content-length" not in hdr and hdr["content-type"] == b"application/json"
    parsed = InferenceServerClient.parse_response_body(payload)
    np.testing.assert_array_equal(parsed.as_numpy("corrected"), res["corrected"])


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda b, h: (b[:-3], h), "shape"),  # binary tail shorter than binary_data_size
        (lambda b, h: (b, [("Inference-Header-Content-Length", b"999999")]), "decode"),
        (lambda b, h: (b, [("Inference-Header-Content-Length", b"12")]), "decode"),  # cuts the JSON
        (lambda b, h: (b, [("Inference-Header-Content-Length", b"-1")]), "decode"),
    ],
)
def test_triton_damaged(damage, reason):
    body, headers = triton_request(X, binary_in=True)
    with pytest.raises(DecodeError) as ei:
        decode(record(*damage(body, headers)), SHAPE, MAX)
    assert ei.value.reason == reason


# ------------------------------------------------------------------ OIP protobuf (Seldon Core v2)
def proto_request(x, raw: bool = True, request_id: str = "p1") -> bytes:
    msg = triton_pb.ModelInferRequest(model_name="iris", id=request_id)
    tensor = msg.inputs.add(name="predict", datatype="FP32", shape=list(x.shape))
    if raw:
        msg.raw_input_contents.append(x.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    msg.parameters["content_type"].string_param = "np"
    return msg.SerializeToString()


@pytest.mark.parametrize("raw", [True, False])
def test_seldon_protobuf_request_answered_in_protobuf(raw):
    headers = [
        ("pipeline", b"iris-pipe"),
        ("x-request-id", b"req-9"),
        ("x-tenant", b"acme"),
        ("traceparent", b"00-ab-cd-01"),
    ]
    req, res, payload, hdr, _out_headers = answer(
        proto_request(X, raw), headers, topic="seldon.default.model.iris.inputs"
    )
    np.testing.assert_array_equal(req.instances, X)
    assert req.fmt == "proto" and req.id == "p1"
    response = triton_pb.ModelInferResponse.FromString(payload)
    assert response.id == "p1" and response.model_name == "adae"
    assert bool(response.raw_output_contents) is raw
    assert response.parameters["threshold"].double_param == 0.25
    if raw:
        parsed = InferResult(response)  # tritonclient reads raw contents only
        for name in FIELDS:
            np.testing.assert_array_equal(parsed.as_numpy(name), res[name])
    else:
        typed = {"INT64": "int64_contents", "BOOL": "bool_contents", "FP32": "fp32_contents"}
        for out in response.outputs:
            got = np.asarray(getattr(out.contents, typed[out.datatype]))
            np.testing.assert_allclose(got, res[out.name], rtol=1e-7)
    assert hdr["pipeline"] == b"iris-pipe" and hdr["x-request-id"] == b"req-9" and hdr["x-tenant"] == b"acme"
    assert hdr["traceparent"] == b"00-ab-cd-01" and hdr["content-type"] == b"application/x-protobuf"


def test_seldon_infer_type_header_and_request_id_from_header():
    headers = [("seldon-infer-type", b"proto/InferModelRequest"), ("x-request-id", b"from-header")]
    req, _, _, hdr, _ = answer(proto_request(X, request_id=""), headers)
    assert req.id == "from-header" and hdr["seldon-infer-type"] == b"proto/InferModelResponse"


def test_schema_registry_framing_is_read_and_repeated():
    for framing in (b"\x00\x00\x00\x01\x2c\x00", b"\x00\x00\x00\x00\x07\x02\x04"):  # indexes [0]; [2] (zigzag)
        req, res, payload, _, _ = answer(framing + proto_request(X))
        np.testing.assert_array_equal(req.instances, X)
        assert payload.startswith(framing)
        response = triton_pb.ModelInferResponse.FromString(payload[len(framing) :])
        np.testing.assert_array_equal(InferResult(response).as_numpy("corrected"), res["corrected"])


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda m: m.raw_input_contents.__setitem__(0, m.raw_input_contents[0][:-4]), "shape"),
        (lambda m: m.inputs.add(name="second", datatype="FP32", shape=[3, 4]), "schema"),
        (lambda m: m.inputs[0].__setattr__("datatype", "BYTES"), "dtype"),
        (lambda m: m.inputs[0].shape.__setitem__(1, 5), "shape"),
        (lambda m: m.raw_input_contents.__setitem__(0, np.full(12, np.nan, "<f4").tobytes()), "non_finite"),
    ],
)
def test_protobuf_rejections(mutate, reason):
    msg = triton_pb.ModelInferRequest.FromString(proto_request(X))
    mutate(msg)
    with pytest.raises(DecodeError) as ei:
        decode(record(msg.SerializeToString()), SHAPE, MAX)
    assert ei.value.reason == reason


def test_seldon_outputs_and_responses_are_skipped_not_rejected():
    response = triton_pb.ModelInferResponse(id="r").SerializeToString()
    for value, headers, topic in [
        (response, [], "seldon.ns.model.iris.outputs"),
        (response, [], "seldon.ns.pipeline.p.outputs"),
        (proto_request(X), [("seldon-infer-type", b"proto/InferModelResponse")], "in"),
        (b'{"id":"a","outputs":[]}', [], "in"),
        (b'{"predictions":[1]}', [], "in"),
    ]:
        with pytest.raises(NotARequest):
            decode(record(value, headers, topic), SHAPE, MAX)


# ------------------------------------------------------------------ KServe payload logger CloudEvents
def kserve_event(data, event_type="org.kubeflow.serving.inference.request", datacontenttype="application/json"):
    return CloudEvent(
        attributes={
            "id": "ce-42",
            "type": event_type,
            "source": "http://iris-predictor-0",
            "specversion": "1.0",
            "datacontenttype": datacontenttype,
            "inferenceservicename": "iris",
            "namespace": "prod",
            "component": "predictor",
            "endpoint": "default",
        },
        data=data,
    )


V1_BODY = json.dumps({"instances": X.tolist()}).encode()
V2_BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": X.ravel().tolist()}]}
).encode()


@pytest.mark.parametrize("body", [V1_BODY, V2_BODY])
@pytest.mark.parametrize("wrong_type", [False, True])
def test_kserve_binary_cloudevent(body, wrong_type):
    # curl's default form type: KServe logs the caller's content-type, right or wrong
    event = kserve_event(
        body, datacontenttype="application/x-www-form-urlencoded" if wrong_type else "application/json"
    )
    msg = ce_kafka.to_binary(event, JSONFormat())
    req, res, payload, _hdr, out_headers = answer(msg.value, list(msg.headers.items()))
    np.testing.assert_allclose(req.instances, X)
    assert req.id == "ce-42"
    back = ce_kafka.from_binary(
        ce_kafka.KafkaMessage(headers=dict(out_headers), key=None, value=payload), JSONFormat(), CloudEvent
    )
    attrs = back.get_attributes()
    assert attrs["id"] == "ce-42" and attrs["type"] == "io.adae-stream.inference.response"
    assert (attrs["inferenceservicename"], attrs["namespace"], attrs["component"]) == ("iris", "prod", "predictor")
    data = back.get_data()
    got = np.asarray(
        data["predictions"]
        if "predictions" in data
        else next(o["data"] for o in data["outputs"] if o["name"] == "corrected")
    )
    np.testing.assert_array_equal(got, res["corrected"])


@pytest.mark.parametrize("as_bytes", [False, True])  # data (JSON) or data_base64
def test_kserve_structured_cloudevent(as_bytes):
    event = kserve_event(V2_BODY if as_bytes else json.loads(V2_BODY))
    msg = ce_kafka.to_structured(event, JSONFormat())
    req, res, payload, hdr, out_headers = answer(msg.value, list(msg.headers.items()))
    assert req.id == "ce-42"
    assert hdr["content-type"].startswith(b"application/cloudevents+json")
    back = ce_kafka.from_structured(
        ce_kafka.KafkaMessage(headers=dict(out_headers), key=None, value=payload), JSONFormat(), CloudEvent
    )
    assert back.get_attributes()["id"] == "ce-42" and back.get_attributes()["namespace"] == "prod"
    corrected = next(o for o in back.get_data()["outputs"] if o["name"] == "corrected")["data"]
    assert corrected == res["corrected"].tolist()
    assert decode_response(payload, out_headers)["id"] == "ce-42"


def test_kserve_response_events_are_skipped():
    response = kserve_event(b'{"predictions":[1,2,3]}', event_type="org.kubeflow.serving.inference.response")
    for msg in (ce_kafka.to_binary(response, JSONFormat()), ce_kafka.to_structured(response, JSONFormat())):
        with pytest.raises(NotARequest) as ei:
            decode(record(msg.value, list(msg.headers.items())), SHAPE, MAX)
        assert ei.value.kind == "cloudevent_response"
    with pytest.raises(NotARequest):  # Seldon Core v1 executor's logger, un-prefixed headers
        decode(record(b'{"data":{}}', [("type", b"io.seldon.serving.inference.response")]), SHAPE, MAX)


@pytest.mark.parametrize(
    "value, headers, reason",
    [
        (b"{not json", [("content-type", b"application/cloudevents+json")], "decode"),
        (b'{"id":"x","type":"t","data_base64":"!!!"}', [("content-type", b"application/cloudevents+json")], "decode"),
        (b'{"id":"x","type":"t"}', [("content-type", b"application/cloudevents+json")], "schema"),
        (b'["event"]', [("content-type", b"application/cloudevents+json")], "schema"),
        (V1_BODY, [("ce_specversion", b"1.0"), ("ce_type", b"t")], "schema"),  # no id
    ],
)
def test_cloudevent_rejections(value, headers, reason):
    with pytest.raises(DecodeError) as ei:
        decode(record(value, headers), SHAPE, MAX)
    assert ei.value.reason == reason


# ------------------------------------------------------------------ the generated protobuf classes
def test_generated_protobuf_module_is_current(tmp_path):
    """The committed _pb2 is what protoc makes of the committed .proto (regenerate as its header says)."""
    proto_dir = ROOT / "adae_stream" / "codecs" / "proto"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"--python_out={tmp_path}",
            str(proto_dir / "open_inference.proto"),
        ],
        check=True,
    )
    generated = (tmp_path / "open_inference_pb2.py").read_text()
    committed = (proto_dir / "open_inference_pb2.py").read_text()
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("# Protobuf Python Version")]  # noqa: E731
    assert strip(generated) == strip(committed)


def test_our_messages_match_the_specification_field_for_field():
    """Field names, numbers and types equal tritonclient's independent copy of the same specification."""
    from adae_stream.codecs.proto import open_inference_pb2 as ours

    def fields(descriptor):
        return {
            (f.name, f.number, f.type, f.label if hasattr(f, "label") else None): (
                fields(f.message_type) if f.message_type else None
            )
            for f in descriptor.fields
        }

    for name in ("ModelInferRequest", "ModelInferResponse", "InferTensorContents", "InferParameter"):
        assert fields(getattr(ours, name).DESCRIPTOR) == fields(getattr(triton_pb, name).DESCRIPTOR), name


def test_result_fields_have_oip_types():
    assert set(FIELDS) <= set(RESULT_DTYPES)
