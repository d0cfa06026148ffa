"""Wire formats: decode a Kafka record into a Request, encode the answer in the request's own family.

Families, recognised from headers and body with no configuration:
- Open Inference Protocol V2 JSON, with Triton's binary tensor extension, and V1 JSON (oip_json.py);
- OIP protobuf ``ModelInferRequest``, bare or in schema-registry framing (Seldon Core v2; oip_proto.py);
- .npy arrays (npy.py);
- any of these inside a CloudEvent, binary or structured (KServe's payload logger; cloudevents.py).

Responses that share a topic with requests (KServe response events, Seldon ``.outputs`` records, OIP
or V1 JSON answers) raise NotARequest: they are counted and skipped, neither answered nor dead-lettered.
Every other rejection is a DecodeError with a reason from DECODE_REASONS, so bad input lands on the
dead-letter topic with a machine-readable cause.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from adae_stream.errors import DecodeError, NotARequest, UnreadableAnswer
from adae_stream.stream.codecs import cloudevents, oip_json, oip_proto
from adae_stream.stream.codecs.npy import NPY_MAGIC, decode_npy, encode_npy
from adae_stream.stream.codecs.records import (
    CLOUDEVENTS_JSON,
    JSON,
    MODEL_NAME_HEADER,
    MODEL_VERSION_HEADER,
    NPY,
    OCTET_STREAM,
    PROTOBUF,
    Envelope,
    RawRecord,
    Request,
    echoed_headers,
    fallback_id,
    header,
    header_text,
    source_headers,
)
from adae_stream.stream.codecs.tensors import (
    ANSWER_PARAMETERS,
    INSTANCE_INDEX,
    RESULT_DTYPES,
    RESULT_OIP,
    wire_bytes,
    wire_dtype,
)
from adae_stream.stream.proto.open_inference_pb2 import ModelInferRequest, ModelInferResponse

__all__ = [
    "INSTANCE_INDEX",
    "RESULT_DTYPES",
    "Envelope",
    "RawRecord",
    "Request",
    "decode",
    "decode_response",
    "encode",
    "encode_request",
    "header",
]

JSON_TYPES = frozenset({JSON, "application/vnd.kserve.v2+json", "application/vnd.kserve.v1+json", "text/json"})
PROTOBUF_TYPES = frozenset(
    {PROTOBUF, "application/protobuf", "application/x-google-protobuf", "application/vnd.google.protobuf"}
)
SNIFFED_TYPES = frozenset({"", OCTET_STREAM})  # no content-type, or one that says nothing about the body
SELDON_OUTPUTS = re.compile(r"\.(model|pipeline)\.[^.]+\.outputs$")  # <prefix>.<ns>.model.<name>.outputs
SELDON_TYPE = "seldon-infer-type"


def decode(record: RawRecord, input_shape: tuple[int, ...] | None, max_bytes: int) -> Request:
    """input_shape None: decode whatever shape the record declares; the loop routes the request to its
    detector and checks it against that detector's input there (tensors.conform)."""
    value = record.value
    if not value:
        raise DecodeError("decode", "empty record body")
    if len(value) > max_bytes:
        raise DecodeError("too_large", f"record is {len(value)} bytes, over max_message_bytes={max_bytes}")
    if SELDON_OUTPUTS.search(record.topic):
        raise NotARequest("seldon_response", f"a record of Seldon's outputs topic {record.topic}")
    seldon = (header_text(record, SELDON_TYPE) or "").lower()
    if seldon.endswith("response"):
        raise NotARequest("seldon_response", f"{SELDON_TYPE} {seldon[:60]}")
    envelope, data = cloudevents.unwrap(record, value)
    if not data:
        raise DecodeError("decode", "empty CloudEvent data")
    family = _family(record, data, envelope is not None, seldon)
    if family == "proto":
        request = oip_proto.decode_proto(record, data, input_shape, max_bytes)
    elif family == "npy":
        request = decode_npy(record, data, input_shape)
    else:
        try:
            request = oip_json.decode_json(record, data, input_shape, max_bytes)
        except DecodeError as exc:  # a protobuf whose first bytes happen to read as whitespace and a brace
            if exc.reason != "decode" or family != "json_or_proto":
                raise
            request = oip_proto.decode_proto(record, data, input_shape, max_bytes)
    if envelope is not None:
        request.envelope = envelope
        if request.id == fallback_id(record):  # no id in the body: the event's id correlates
            request.id = str(envelope.attributes["id"])
    return request


def _family(record: RawRecord, data: bytes, enveloped: bool, seldon: str) -> str:
    """proto | npy | json | json_or_proto. A content-type is trusted unless it came with a CloudEvent
    (KServe logs the caller's, which may be wrong) or says nothing (absent, octet-stream)."""
    if seldon:
        return "proto" if seldon.startswith("proto/") else "json"
    if header(record, oip_json.BINARY_LENGTH_HEADER) is not None:
        return "json"
    ctype = (header_text(record, "content-type") or "").split(";")[0].strip().lower()
    if not enveloped and ctype not in SNIFFED_TYPES:
        if ctype == NPY:
            return "npy"
        if ctype in JSON_TYPES:
            return "json"
        if ctype in PROTOBUF_TYPES:
            return "proto"
        raise DecodeError("decode", f"unsupported content-type {ctype[:100]!r} (expected {JSON}, {NPY} or {PROTOBUF})")
    if data.startswith(NPY_MAGIC):
        return "npy"
    if data.lstrip()[:1] in (b"{", b"["):
        return "json_or_proto" if oip_proto.looks_like_protobuf(data) else "json"
    if oip_proto.looks_like_protobuf(data):
        return "proto"
    raise DecodeError(
        "decode", "the body is neither JSON, .npy nor protobuf" + (f" (content-type {ctype[:100]!r})" if ctype else "")
    )


ENCODERS: dict[
    str, Callable[[Request, dict[str, np.ndarray], dict[str, Any]], tuple[bytes, str, list[tuple[str, bytes]]]]
] = {"v2": oip_json.encode_json, "v1": oip_json.encode_json, "npy": encode_npy, "proto": oip_proto.encode_proto}


def _request_headers(request: Request, info: dict[str, Any]) -> list[tuple[str, bytes]]:
    """What every record about a request carries, an answer or a flagged capture: its id and the threshold."""
    return [("request-id", request.id.encode()), ("adae-threshold", repr(info["threshold"]).encode())]


def encode(
    request: Request, result: dict[str, np.ndarray], info: dict[str, Any]
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Body and headers of the answer, in the request's family (and envelope); ``result`` holds the fields
    to publish, in RESULT_DTYPES order. ``info`` carries model_name, model_version (the repository version)
    and ANSWER_PARAMETERS."""
    payload, ctype, extra = ENCODERS[request.fmt](request, result, info)
    headers = [
        *_request_headers(request, info),
        ("adae-detector-id", info["detector_id"].encode()),
        (MODEL_NAME_HEADER, info["model_name"].encode()),
        (MODEL_VERSION_HEADER, info["model_version"].encode()),
        *extra,
        *echoed_headers(request.record),
    ]
    if header(request.record, SELDON_TYPE) is not None:
        headers.append(
            (SELDON_TYPE, b"proto/InferModelResponse" if request.fmt == "proto" else b"json/inferModelResponse")
        )
    if request.envelope is not None:
        payload, ctype, headers = cloudevents.wrap(
            request.envelope, request.id, payload, ctype, headers, source=f"/adae-stream/{info['model_name']}"
        )
    return payload, [("content-type", ctype.encode()), *headers]


def encode_flagged(
    request: Request, instances: np.ndarray, result: dict[str, np.ndarray], info: dict[str, Any]
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A flagged-sample record, for review and relabelling: the flagged instances' input data (an `input`
    tensor) with their positions, scores, flags and predictions, and the request's id and coordinates.
    In the request's family: npy, a protobuf ModelInferResponse, or V2 JSON for the JSON families."""
    n = len(instances)
    x = np.ascontiguousarray(instances, dtype="<f4")
    if request.fmt == "npy":
        arr = np.empty(n, dtype=[("input", "<f4", x.shape[1:]), *[(k, RESULT_DTYPES[k]) for k in result]])
        arr["input"] = x
        for k, v in result.items():
            arr[k] = v
        buf = io.BytesIO()
        np.lib.format.write_array(buf, arr, allow_pickle=False)
        payload, ctype = buf.getvalue(), NPY
    elif request.fmt == "proto":
        msg = ModelInferResponse(model_name=info["model_name"], model_version=info["model_version"], id=request.id)
        for key in ANSWER_PARAMETERS:
            oip_proto.set_parameter(msg.parameters[key], info[key])
        msg.outputs.add(name="input", datatype="FP32", shape=list(x.shape))
        msg.raw_output_contents.append(x.tobytes())
        for k, v in result.items():
            msg.outputs.add(name=k, datatype=RESULT_OIP[k], shape=[n])
            msg.raw_output_contents.append(wire_bytes(k, v))
        payload, ctype = msg.SerializeToString(), PROTOBUF
    else:
        outputs = [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
        outputs += [{"name": k, "shape": [n], "datatype": RESULT_OIP[k], "data": v.tolist()} for k, v in result.items()]
        body = {
            "id": request.id,
            "model_name": info["model_name"],
            "model_version": info["model_version"],
            "outputs": outputs,
            "parameters": {k: info[k] for k in ANSWER_PARAMETERS},
        }
        payload, ctype = json.dumps(body, separators=(",", ":")).encode(), JSON
    rec = request.record
    return payload, [
        ("content-type", ctype.encode()),
        *_request_headers(request, info),
        *source_headers(rec),
        *echoed_headers(rec),
    ]


# --------------------------------------------------------------------------- client side
REQUEST_FORMATS = ("v2", "v1", "npy", "proto", "triton")


def encode_request(
    x: np.ndarray, fmt: str, request_id: str, input_name: str = "input-0"
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A request record for ``x`` (n, ...) in one of REQUEST_FORMATS: what producers send to the input topic.
    proto uses raw_input_contents; triton is V2 JSON with the tensor in the binary tail, binary outputs asked."""
    x = np.asarray(x, dtype=np.float32)
    extra: list[tuple[str, bytes]] = []
    if fmt == "v2":
        body: dict[str, Any] = {
            "id": request_id,
            "inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
        }
        payload, ctype = json.dumps(body, separators=(",", ":")).encode(), JSON
    elif fmt == "v1":
        payload, ctype = json.dumps({"instances": x.tolist()}, separators=(",", ":")).encode(), JSON
    elif fmt == "npy":
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(x), allow_pickle=False)
        payload, ctype = buf.getvalue(), NPY
    elif fmt == "proto":
        msg = ModelInferRequest(id=request_id)
        msg.inputs.add(name=input_name, datatype="FP32", shape=list(x.shape))
        msg.raw_input_contents.append(x.astype("<f4").tobytes())
        payload, ctype = msg.SerializeToString(), PROTOBUF
    elif fmt == "triton":
        raw = x.astype("<f4").tobytes()
        body = {
            "id": request_id,
            "inputs": [
                {
                    "name": input_name,
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
        text = json.dumps(body, separators=(",", ":")).encode()
        payload, ctype = text + raw, OCTET_STREAM
        extra = [(oip_json.BINARY_LENGTH_HEADER, str(len(text)).encode())]
    else:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(REQUEST_FORMATS)}")
    return payload, [("content-type", ctype.encode()), ("request-id", request_id.encode()), *extra]


def decode_response(value: bytes, headers: Sequence[tuple[str, bytes]] | None) -> dict[str, Any]:
    """Parse an answer from the output topic into {'id', field: np.ndarray, ...} whatever its family.

    Raises UnreadableAnswer, and only that, for any record it cannot read: the output topic is shared
    ground (other writers, corrupt records), and its readers must be able to skip what is not ours
    with one except clause (tests/test_codec_properties.py holds this for arbitrary bytes and headers)."""
    try:
        answer = _decode_response(value, headers)
        if not isinstance(answer.get("id"), str):
            raise TypeError(f"the answer's id is {type(answer.get('id')).__name__}, not a string")
        return answer
    except UnreadableAnswer:
        raise
    except Exception as exc:  # JSON, base64, protobuf, numpy and missing keys each raise their own
        raise UnreadableAnswer(f"not an answer: {type(exc).__name__}: {exc}"[:300]) from exc


def _decode_response(value: bytes, headers: Sequence[tuple[str, bytes]] | None) -> dict[str, Any]:
    hdr = {k.lower(): v for k, v in headers or ()}
    ctype = hdr.get("content-type", b"").decode().split(";")[0].strip().lower()
    out: dict[str, Any]
    if ctype == CLOUDEVENTS_JSON:
        event = json.loads(value)
        inner = json.dumps(event["data"]).encode() if "data" in event else base64.b64decode(event["data_base64"])
        out = _decode_response(
            inner,
            [
                ("content-type", event["datacontenttype"].encode()),
                *[(k, v) for k, v in (headers or ()) if k.lower() not in ("content-type",)],
            ],
        )
        out["cloudevent"] = {k: v for k, v in event.items() if k not in ("data", "data_base64")}
        return out
    if ctype == NPY:
        arr = np.lib.format.read_array(io.BytesIO(value), allow_pickle=False)
        out = {k: arr[k] for k in arr.dtype.names or ()}
        out["id"] = hdr.get("request-id", b"").decode()
        return out
    if ctype == PROTOBUF:
        _framing, body = oip_proto.split_framing(value)
        msg = ModelInferResponse.FromString(body)
        out = {}
        for i, tensor in enumerate(msg.outputs):
            dtype = np.dtype(RESULT_DTYPES.get(tensor.name, np.float32)).newbyteorder("<")
            if msg.raw_output_contents:
                out[tensor.name] = np.frombuffer(msg.raw_output_contents[i], dtype=dtype).reshape(list(tensor.shape))
            else:
                out[tensor.name] = np.asarray(
                    getattr(tensor.contents, oip_proto.TYPED_FIELD[tensor.datatype]), dtype=dtype
                )
        out["id"] = msg.id
        out["parameters"] = {k: oip_proto.parameter_value(v) for k, v in msg.parameters.items()}
        return out
    length = hdr.get(oip_json.BINARY_LENGTH_HEADER)
    body = json.loads(value[: int(length)] if length else value)
    if "outputs" in body:
        tail, out = memoryview(value)[int(length) :] if length else memoryview(b""), {}
        for o in body["outputs"]:
            size = (o.get("parameters") or {}).get("binary_data_size")
            if size is None:
                out[o["name"]] = np.asarray(o["data"], dtype=RESULT_DTYPES.get(o["name"], np.float32)).reshape(
                    o["shape"]
                )
            else:
                out[o["name"]] = np.frombuffer(tail[:size], dtype=wire_dtype(o["name"]))
                tail = tail[size:]
        out["id"] = body["id"]
        out["parameters"] = body.get("parameters", {})
        return out
    out = {k: np.asarray(v, dtype=RESULT_DTYPES.get(k)) for k, v in body.items() if isinstance(v, list)}
    out["corrected"] = out.pop("predictions")
    out["id"] = body["id"]
    return out
