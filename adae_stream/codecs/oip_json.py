"""JSON requests and answers: Open Inference Protocol V2 (with Triton's binary tensor extension) and V1.

Triton's extension: the body is the JSON request followed by raw tensors in input order; each binary
input says its length in ``parameters.binary_data_size``, and the JSON's own length comes in the
``Inference-Header-Content-Length`` header (without it, the end of the JSON prefix is found by
decoding it). A request asks for binary outputs with ``parameters.binary_data_output: true`` or per
output with ``outputs[i].parameters.binary_data: true``; the answer then carries those in its tail.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from adae_stream.codecs import json_text, tensors
from adae_stream.codecs.records import JSON, OCTET_STREAM, RawRecord, Request, fallback_id, header
from adae_stream.errors import DecodeError, NotARequest
from adae_stream.scoring import PREDICTION

BINARY_LENGTH_HEADER = "inference-header-content-length"
ALL = "*"
# the family, as codecs.FAMILIES takes it (family.WireFamily)
NAME, ANSWERS, REQUEST_FORMATS = "json", ("v2", "v1"), ("v2", "v1", "triton")
CONTENT_TYPES = frozenset({JSON, "application/vnd.kserve.v2+json", "application/vnd.kserve.v1+json", "text/json"})
SELDON_ANSWER_TYPE = "json/inferModelResponse"


def _v2_answer(request_id: str, info: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """A V2 response body: who answered (model name and version, ANSWER_PARAMETERS) and the outputs."""
    return {
        "id": request_id,
        "model_name": info["model_name"],
        "model_version": info["model_version"],
        "outputs": outputs,
        "parameters": {k: info[k] for k in tensors.ANSWER_PARAMETERS},
    }


def split_binary(value: bytes, record: RawRecord) -> tuple[Any, memoryview]:
    """The parsed JSON part and the binary tail after it (empty for plain JSON)."""
    declared = header(record, BINARY_LENGTH_HEADER)
    try:
        if declared is not None:
            length = int(declared.decode("ascii", "replace")) if declared.strip().isdigit() else -1
            if not 0 < length <= len(value):
                raise DecodeError(
                    "decode",
                    f"{BINARY_LENGTH_HEADER} {declared[:40]!r} is not a length within the body's {len(value)} bytes",
                )
            return json_text.loads(value[:length]), memoryview(value)[length:]
        try:
            return json_text.loads(value), memoryview(b"")
        except ValueError as exc:  # perhaps a JSON prefix and a binary tail, sent without the length header
            text = value.decode("utf-8", "surrogateescape")
            try:
                body, end = json.JSONDecoder().raw_decode(text, len(text) - len(text.lstrip()))
            except ValueError:
                raise exc from None
            if not isinstance(body, dict):  # Triton's prefix is a request object; anything else is bad JSON
                raise exc from None
            return body, memoryview(value)[len(text[:end].encode("utf-8", "surrogateescape")) :]
    except RecursionError:
        raise DecodeError("decode", "JSON nested too deeply") from None
    except ValueError as exc:
        raise DecodeError("decode", f"invalid JSON: {str(exc)[:200]}") from None


def decode(record: RawRecord, value: bytes, input_shape: tuple[int, ...] | None, max_bytes: int) -> Request:
    body, tail = split_binary(value, record)
    if not isinstance(body, dict):
        raise DecodeError("schema", f"JSON body must be an object, got {type(body).__name__}")
    if "inputs" in body:
        return _decode_v2(record, body, tail, input_shape, max_bytes)
    if "instances" in body:
        x = _json_array(body["instances"], None, input_shape, "instances")
        return Request(fallback_id(record), x, "v1", record)
    if "outputs" in body or "predictions" in body:
        raise NotARequest("json_response", "an inference response (outputs / predictions), not a request")
    raise DecodeError("schema", "JSON body has neither 'inputs' (Open Inference Protocol V2) nor 'instances' (V1)")


def _decode_v2(
    record: RawRecord, body: dict, tail: memoryview, input_shape: tuple[int, ...] | None, max_bytes: int
) -> Request:
    inputs = body["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        n = len(inputs) if isinstance(inputs, list) else "no"
        raise DecodeError("schema", f"'inputs' must be a list with exactly one tensor object, got {n}")
    tensor = inputs[0]
    params = tensor.get("parameters")
    if not isinstance(params, dict):
        params = {}
    binary_size = params.get("binary_data_size")
    missing = [k for k in ("name", "shape", "datatype") if k not in tensor] + (
        [] if "data" in tensor or binary_size is not None else ["data"]
    )
    if missing:
        raise DecodeError("schema", f"input tensor lacks {', '.join(missing)}")
    rid = tensors.request_id(body.get("id"))
    dtype = tensors.datatype(tensor["datatype"])
    declared = tensors.shape(tensor["shape"], input_shape, max_bytes)
    if binary_size is not None:
        if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size != len(tail):
            raise DecodeError(
                "shape", f"binary_data_size {binary_size!r} does not match the {len(tail)} bytes after the JSON"
            )
        x = tensors.from_bytes(tail, dtype, declared, "binary tensor data")
    else:
        if len(tail):
            raise DecodeError("schema", f"{len(tail)} bytes follow the JSON but no input declares binary_data_size")
        x = _json_array(tensor["data"], declared, input_shape, "data")
    return Request(
        rid or fallback_id(record),
        x,
        "v2",
        record,
        input_name=str(tensor["name"]),
        parameters=body["parameters"] if isinstance(body.get("parameters"), dict) else {},
        binary_outputs=_binary_outputs(body),
    )


def _binary_outputs(body: dict) -> frozenset[str]:
    params = body.get("parameters")
    if isinstance(params, dict) and params.get("binary_data_output") is True:
        return frozenset({ALL})
    outputs = body.get("outputs")
    if not isinstance(outputs, list):
        return frozenset()
    return frozenset(
        o["name"]
        for o in outputs
        if isinstance(o, dict)
        and isinstance(o.get("name"), str)
        and isinstance(o.get("parameters"), dict)
        and o["parameters"].get("binary_data") is True
    )


def _json_array(data: Any, declared: list[int] | None, input_shape: tuple[int, ...] | None, field: str) -> np.ndarray:
    if not isinstance(data, list):
        raise DecodeError("schema", f"'{field}' must be a list")
    try:
        a = np.asarray(data)  # no dtype: null, strings and booleans show up as the array's kind, not as NaN / 1.0
    except (ValueError, TypeError) as exc:
        raise DecodeError("shape", f"'{field}' is not a regular array: {str(exc).splitlines()[0][:200]}") from None
    if a.dtype.kind not in "iuf":
        raise DecodeError(
            "dtype",
            f"'{field}' holds non-numeric values (numpy kind {a.dtype.kind!r}: strings, nulls, "
            "booleans or huge integers)",
        )
    if declared is not None:
        if a.size != int(np.prod(declared)):
            raise DecodeError(
                "shape", f"'{field}' has {a.size} elements but shape {declared} needs {int(np.prod(declared))}"
            )
        a = a.reshape(declared)
    elif a.ndim == 0:
        raise DecodeError("shape", f"'{field}' is a scalar, expected a list of instances")
    elif input_shape is not None and a.shape[1:] != tuple(input_shape) and not (a.size == 0 and a.ndim == 1):
        raise DecodeError(
            "shape", f"'{field}' has shape {list(a.shape)}, expected (n, {', '.join(map(str, input_shape))})"
        )
    if a.size == 0 and input_shape is not None:
        a = a.reshape((0, *input_shape))
    return tensors.finite_float32(a, f"'{field}'")


@functools.lru_cache(maxsize=256)
def _all_binary_json_after_id(
    names: tuple[str, ...], n: int, model: tuple[str, str], parameters: tuple[tuple[str, Any], ...]
) -> bytes:
    """The JSON part of an answer whose outputs all go in the binary tail, from just after the id on: it is
    the same for every answer of n instances (writing it cost as much as the rest of the encode)."""
    outputs = [
        {
            "name": k,
            "shape": [n],
            "datatype": tensors.RESULT_OIP[k],
            "parameters": {"binary_data_size": n * np.dtype(tensors.RESULT_DTYPES[k]).itemsize},
        }
        for k in names
    ]
    body = _v2_answer("", {"model_name": model[0], "model_version": model[1], **dict(parameters)}, outputs)
    return json_text.dumps(body)[len(b'{"id":""') :]


def encode(
    request: Request, result: dict[str, np.ndarray], info: dict[str, Any]
) -> tuple[bytes, str, list[tuple[str, bytes]]]:
    """Body, content-type and extra headers of a V2 or V1 answer."""
    names = list(result)
    n = len(result[names[0]])
    binary = request.binary_outputs
    if ALL in binary or binary >= set(names):  # all outputs binary: the JSON part is a cached template
        text = (
            b'{"id":'
            + json_text.dumps(request.id)
            + _all_binary_json_after_id(
                tuple(names),
                n,
                (info["model_name"], info["model_version"]),
                tuple((k, info[k]) for k in tensors.ANSWER_PARAMETERS),
            )
        )
        tail = b"".join(tensors.wire_bytes(k, result[k]) for k in names)
        return text + tail, OCTET_STREAM, [(BINARY_LENGTH_HEADER, str(len(text)).encode())]
    if request.fmt == "v1":
        # V1's one documented prediction field carries what the policy publishes; the rest beside it
        body: dict[str, Any] = {"id": request.id, "predictions": result[PREDICTION].tolist()}
        body.update({k: result[k].tolist() for k in names if k != PREDICTION})
        body.update({k: info[k] for k in tensors.ANSWER_PARAMETERS})
        return json_text.dumps(body), JSON, []
    outputs: list[dict[str, Any]] = []
    binary_tails: list[bytes] = []
    for k in names:
        out: dict[str, Any] = {"name": k, "shape": [n], "datatype": tensors.RESULT_OIP[k]}
        if k in binary:
            raw = tensors.wire_bytes(k, result[k])
            out["parameters"] = {"binary_data_size": len(raw)}
            binary_tails.append(raw)
        else:
            out["data"] = result[k].tolist()
        outputs.append(out)
    body = _v2_answer(request.id, info, outputs)
    text = json_text.dumps(body)
    if not binary_tails:
        return text, JSON, []
    return text + b"".join(binary_tails), OCTET_STREAM, [(BINARY_LENGTH_HEADER, str(len(text)).encode())]


def encode_flagged(
    request: Request, x: np.ndarray, result: dict[str, np.ndarray], info: dict[str, Any]
) -> tuple[bytes, str]:
    """A V2 response whose first output is the instances (`input`), then the result fields (V1 too:
    V1 has no way to name several outputs)."""
    outputs = [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    outputs += [
        {"name": k, "shape": [len(x)], "datatype": tensors.RESULT_OIP[k], "data": v.tolist()} for k, v in result.items()
    ]
    body = _v2_answer(request.id, info, outputs)
    return json_text.dumps(body), JSON


def encode_request(
    x: np.ndarray, fmt: str, request_id: str, input_name: str
) -> tuple[bytes, str, list[tuple[str, bytes]]]:
    """v2: the tensor as a JSON list; v1: `instances`; triton: V2 with the tensor in the binary tail and
    binary outputs asked for."""
    if fmt == "v1":
        return json_text.dumps({"instances": x.tolist()}), JSON, []
    tensor: dict[str, Any] = {"name": input_name, "shape": list(x.shape), "datatype": "FP32"}
    if fmt == "v2":
        return json_text.dumps({"id": request_id, "inputs": [{**tensor, "data": x.ravel().tolist()}]}), JSON, []
    raw = x.astype("<f4").tobytes()
    text = json_text.dumps(
        {
            "id": request_id,
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    )
    return text + raw, OCTET_STREAM, [(BINARY_LENGTH_HEADER, str(len(text)).encode())]


def decode_response(value: bytes, headers: Mapping[str, bytes]) -> dict[str, Any]:
    length = headers.get(BINARY_LENGTH_HEADER)
    body = json_text.loads(value[: int(length)] if length else value)
    out: dict[str, Any] = {}
    if "outputs" not in body:  # V1: the published predictions and the other fields as lists
        out = {k: np.asarray(v, dtype=tensors.RESULT_DTYPES.get(k)) for k, v in body.items() if isinstance(v, list)}
        out[PREDICTION] = out.pop("predictions")
        out["id"] = body["id"]
        return out
    tail = memoryview(value)[int(length) :] if length else memoryview(b"")
    for o in body["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            dtype = tensors.RESULT_DTYPES.get(o["name"], np.float32)
            out[o["name"]] = np.asarray(o["data"], dtype=dtype).reshape(o["shape"])
        else:
            out[o["name"]] = np.frombuffer(tail[:size], dtype=tensors.wire_dtype(o["name"]))
            tail = tail[size:]
    out["id"] = body["id"]
    out["parameters"] = body.get("parameters", {})
    return out


def sniff(record: RawRecord, data: bytes) -> bool:
    """Triton's length header says JSON whatever the body's first bytes; otherwise an object or array."""
    return header(record, BINARY_LENGTH_HEADER) is not None or data.lstrip()[:1] in (b"{", b"[")
