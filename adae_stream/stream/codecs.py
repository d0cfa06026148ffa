"""Wire formats: decode a Kafka record into a Request, encode results in the request's own family.

Formats (chosen by the ``content-type`` header, else sniffed from the body):
- ``application/json`` with ``{"inputs": [...]}``: Open Inference Protocol (KServe V2) request.
- ``application/json`` with ``{"instances": [...]}``: V1 request.
- ``application/x-npy``: a .npy array (n, ...); the request id from the ``request-id`` header or the key.

Every rejection is a DecodeError with a reason from DECODE_REASONS, so bad input lands on the dead-letter topic
with a machine-readable cause. Declared shapes are checked against limits and the body before anything
is allocated from them; numeric conversion is vectorised numpy (no per-element Python loops).
"""
from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np

from adae_stream.errors import DecodeError
JSON, NPY = "application/json", "application/x-npy"
V2_DATATYPES = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
NPY_MAGIC = b"\x93NUMPY"


class RawRecord(NamedTuple):
    """The fields of a Kafka record the pipeline uses (kafka-python's ConsumerRecord has the same names)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp: int = -1


@dataclass(eq=False)
class Request:
    id: str
    instances: np.ndarray  # float32 (n, *input_shape)
    fmt: str  # "v2" | "v1" | "npy"
    record: RawRecord
    input_name: str | None = None
    arrival: float = 0.0  # monotonic time the record was polled (for batching deadlines)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.instances.shape[0])


def header(record: RawRecord, name: str) -> bytes | None:
    for k, v in record.headers or ():
        if k.lower() == name:
            return v
    return None


def fallback_id(record: RawRecord) -> str:
    """request-id header, else the key, else topic-partition-offset (stable across redelivery)."""
    for raw in (header(record, "request-id"), record.key):
        if raw:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw.hex()
    return f"{record.topic}-{record.partition}-{record.offset}"


def decode(record: RawRecord, input_shape: tuple[int, ...], max_bytes: int) -> Request:
    value = record.value
    if not value:
        raise DecodeError("decode", "empty record body")
    if len(value) > max_bytes:
        raise DecodeError("too_large", f"record is {len(value)} bytes, over max_message_bytes={max_bytes}")
    ctype_raw = header(record, "content-type")
    if ctype_raw is not None:
        ctype = ctype_raw.decode("latin-1").split(";")[0].strip().lower()
    else:
        ctype = NPY if value.startswith(NPY_MAGIC) else JSON if value.lstrip()[:1] in (b"{", b"[") else ""
    if ctype == NPY:
        return _decode_npy(record, input_shape)
    if ctype in (JSON, "application/vnd.kserve.v2+json", "application/vnd.kserve.v1+json"):
        return _decode_json(record, input_shape, max_bytes)
    raise DecodeError("decode", f"unsupported content-type {ctype!r} (expected {JSON} or {NPY})" if ctype else "no content-type header and the body is neither JSON nor .npy")


def _decode_json(record: RawRecord, input_shape: tuple[int, ...], max_bytes: int) -> Request:
    try:
        body = json.loads(record.value)
    except RecursionError:
        raise DecodeError("decode", "JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError("decode", f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise DecodeError("schema", f"JSON body must be an object, got {type(body).__name__}")
    if "inputs" in body:
        return _decode_v2(record, body, input_shape, max_bytes)
    if "instances" in body:
        x = _to_array(body["instances"], None, input_shape, "instances")
        return Request(fallback_id(record), x, "v1", record)
    raise DecodeError("schema", "JSON body has neither 'inputs' (Open Inference Protocol V2) nor 'instances' (V1)")


def _decode_v2(record: RawRecord, body: dict, input_shape: tuple[int, ...], max_bytes: int) -> Request:
    inputs = body["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        n = len(inputs) if isinstance(inputs, list) else "no"
        raise DecodeError("schema", f"'inputs' must be a list with exactly one tensor object, got {n}")
    tensor = inputs[0]
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
    if missing:
        raise DecodeError("schema", f"input tensor lacks {', '.join(missing)}")
    rid = body.get("id")
    if rid is not None and not isinstance(rid, str):
        raise DecodeError("schema", "'id' must be a string")
    if rid and not _is_unicode(rid):
        raise DecodeError("schema", "'id' is not valid Unicode (it holds a lone surrogate escape such as \\ud800)")
    dt = tensor["datatype"]
    if not isinstance(dt, str) or dt.upper() not in V2_DATATYPES:
        raise DecodeError("dtype", f"datatype {dt!r} is not numeric (one of {', '.join(sorted(V2_DATATYPES))})")
    shape = tensor["shape"]
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise DecodeError("schema", f"shape must be a non-empty list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise DecodeError("shape", f"negative dimension in shape {shape}")
    if math.prod(shape) > max_bytes:  # every element takes at least one byte of the body: never allocate beyond it
        raise DecodeError("too_large", f"declared shape {shape} has more elements than the record could carry")
    if tuple(shape[1:]) != tuple(input_shape):
        raise DecodeError("shape", f"declared shape {shape} does not match the detector's input (n, {', '.join(map(str, input_shape))})")
    params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    x = _to_array(tensor["data"], shape, input_shape, "data")
    return Request(rid or fallback_id(record), x, "v2", record, input_name=str(tensor["name"]), parameters=params)


def _is_unicode(text: str) -> bool:
    """json.loads accepts lone surrogate escapes ("\\ud800"), which no UTF-8 answer or header can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _to_array(data: Any, shape: list[int] | None, input_shape: tuple[int, ...], what: str) -> np.ndarray:
    if not isinstance(data, list):
        raise DecodeError("schema", f"'{what}' must be a list")
    try:
        a = np.asarray(data)  # no dtype: null, strings and booleans show up as the array's kind, not as NaN / 1.0
    except (ValueError, TypeError) as exc:
        raise DecodeError("shape", f"'{what}' is not a regular array: {str(exc).splitlines()[0][:200]}") from None
    if a.dtype.kind not in "iuf":
        raise DecodeError("dtype", f"'{what}' holds non-numeric values (numpy kind {a.dtype.kind!r}: strings, nulls, booleans or huge integers)")
    a = a.astype(np.float32)
    if shape is not None:
        if a.size != math.prod(shape):
            raise DecodeError("shape", f"'{what}' has {a.size} elements but shape {shape} needs {math.prod(shape)}")
        a = a.reshape(shape)
    elif a.ndim == 0 or a.shape[1:] != tuple(input_shape) and not (a.size == 0 and a.ndim == 1):
        raise DecodeError("shape", f"'{what}' has shape {list(a.shape)}, expected (n, {', '.join(map(str, input_shape))})")
    if a.size == 0:
        a = a.reshape((0, *input_shape))
    if not np.isfinite(a).all():
        raise DecodeError("non_finite", f"'{what}' contains NaN or infinite values (or values beyond float32 range)")
    return a


def _npy_preamble(value: bytes) -> bytes:
    """Magic, version and header dict: the same bytes for every request of one shape and dtype."""
    if len(value) >= 10 and value[6] == 1:
        return value[: 10 + int.from_bytes(value[8:10], "little")]
    if len(value) >= 12 and value[6] == 2:
        return value[: 12 + int.from_bytes(value[8:12], "little")]
    return value[:16]  # not a version we read: the parser says so


@functools.lru_cache(maxsize=128)
def _parse_npy_preamble(preamble: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Cached because numpy parses the header dict with ast.literal_eval (~13 us, most of a request's
    decode); traffic repeats a handful of headers. Only headers that parse are cached, and numpy caps
    a header at 10,000 bytes, so hostile input cannot grow the cache past 128 small entries."""
    fp = io.BytesIO(preamble)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # numpy's header parser raises several types on hostile bytes
        raise DecodeError("decode", f"invalid .npy header: {str(exc)[:200]}") from None
    return tuple(shape), bool(fortran), dtype


def _decode_npy(record: RawRecord, input_shape: tuple[int, ...]) -> Request:
    value = record.value
    preamble = _npy_preamble(value)
    shape, fortran, dtype = _parse_npy_preamble(preamble)
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "fiu":
        raise DecodeError("dtype", f".npy dtype {dtype} is not a plain numeric type")
    if len(shape) == 0 or tuple(shape[1:]) != tuple(input_shape):
        raise DecodeError("shape", f".npy shape {list(shape)} does not match the detector's input (n, {', '.join(map(str, input_shape))})")
    count = math.prod(shape)
    offset = len(preamble)
    if count * dtype.itemsize != len(value) - offset:
        raise DecodeError("shape", f".npy body has {len(value) - offset} bytes but shape {list(shape)} x {dtype} needs {count * dtype.itemsize}")
    a = np.frombuffer(value, dtype=dtype, count=count, offset=offset).reshape(shape, order="F" if fortran else "C")
    a = a.astype(np.float32)  # copies: the record's buffer is not kept alive
    if not np.isfinite(a).all():
        raise DecodeError("non_finite", ".npy array contains NaN or infinite values (or values beyond float32 range)")
    return Request(fallback_id(record), a, "npy", record)


# --------------------------------------------------------------------------- encoding
RESULT_DTYPES = {"corrected": np.int64, "is_adversarial": np.bool_, "instance_score": np.float32, "no_defense": np.int64, "defense": np.int64}
V2_TYPES = {"corrected": "INT64", "is_adversarial": "BOOL", "instance_score": "FP32", "no_defense": "INT64", "defense": "INT64"}


@functools.lru_cache(maxsize=32)
def _result_dtype(names: tuple[str, ...]) -> np.dtype:
    return np.dtype([(k, RESULT_DTYPES[k]) for k in names])


@functools.lru_cache(maxsize=256)
def _npy_result_header(names: tuple[str, ...], n: int) -> bytes:
    """The .npy preamble np.lib.format.write_array would write for n records of these fields, built once
    per (fields, n) instead of per answer (its repr-and-pad costs as much as the rest of the encode)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(np.empty(n, dtype=_result_dtype(names))))
    return buf.getvalue()


def encode(request: Request, result: dict[str, np.ndarray], info: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Body and headers of the answer; ``result`` holds only the fields to publish (in RESULT_DTYPES order).

    ``info`` carries model_name, threshold and detector_version.
    """
    names = [k for k in RESULT_DTYPES if k in result]
    if request.fmt == "v2":
        body = {
            "id": request.id,
            "model_name": info["model_name"],
            "outputs": [
                {"name": k, "shape": [request.n], "datatype": V2_TYPES[k], "data": result[k].tolist()} for k in names
            ],
            "parameters": {"threshold": info["threshold"], "detector_version": info["detector_version"]},
        }
        payload, ctype = json.dumps(body, separators=(",", ":")).encode(), JSON
    elif request.fmt == "v1":
        body = {"id": request.id, "predictions": result["corrected"].tolist()}
        body.update({k: result[k].tolist() for k in names if k != "corrected"})
        body.update({"threshold": info["threshold"], "detector_version": info["detector_version"]})
        payload, ctype = json.dumps(body, separators=(",", ":")).encode(), JSON
    else:
        arr = np.empty(request.n, dtype=_result_dtype(tuple(names)))
        for k in names:
            arr[k] = result[k]
        payload, ctype = _npy_result_header(tuple(names), request.n) + arr.tobytes(), NPY
    headers = [("request-id", request.id.encode()), ("content-type", ctype.encode()), ("adae-threshold", repr(info["threshold"]).encode())]
    return payload, headers


# --------------------------------------------------------------------------- client side
def encode_request(x: np.ndarray, fmt: str, request_id: str, input_name: str = "input-0") -> tuple[bytes, list[tuple[str, bytes]]]:
    """A request record for ``x`` (n, ...) in format v2 | v1 | npy: what producers send to the input topic."""
    x = np.asarray(x, dtype=np.float32)
    if fmt == "v2":
        body = {"id": request_id, "inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        payload, ctype = json.dumps(body, separators=(",", ":")).encode(), JSON
    elif fmt == "v1":
        payload, ctype = json.dumps({"instances": x.tolist()}, separators=(",", ":")).encode(), JSON
    elif fmt == "npy":
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(x), allow_pickle=False)
        payload, ctype = buf.getvalue(), NPY
    else:
        raise ValueError(f"unknown format {fmt!r}: use v2, v1 or npy")
    return payload, [("content-type", ctype.encode()), ("request-id", request_id.encode())]


def decode_response(value: bytes, headers: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    """Parse an answer from the output topic into {'id', field: np.ndarray, ...} whatever its family."""
    hdr = {k: v for k, v in headers or ()}
    if hdr.get("content-type", b"").decode() == NPY:
        arr = np.lib.format.read_array(io.BytesIO(value), allow_pickle=False)
        out: dict[str, Any] = {k: arr[k] for k in arr.dtype.names}
        out["id"] = hdr.get("request-id", b"").decode()
        return out
    body = json.loads(value)
    if "outputs" in body:
        out = {o["name"]: np.asarray(o["data"], dtype=RESULT_DTYPES.get(o["name"])) for o in body["outputs"]}
        out["id"] = body["id"]
        out["parameters"] = body.get("parameters", {})
        return out
    out = {k: np.asarray(v, dtype=RESULT_DTYPES.get(k)) for k, v in body.items() if isinstance(v, list)}
    out["corrected"] = out.pop("predictions")
    out["id"] = body["id"]
    return out
