"""Open Inference Protocol protobuf: ModelInferRequest in, ModelInferResponse out (Seldon Core v2 topics).

Tensor data comes in ``raw_input_contents`` (little-endian, one entry per input) or in the typed
``contents``; the answer uses the same representation. With a schema registry, bodies carry Confluent
framing: byte 0, a 4-byte schema id, the message-index list, then the protobuf. The answer repeats the
request's prefix as it came (the registry's ids are the producer's business; we do not register).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError as ProtobufDecodeError

from adae_stream.codecs import tensors
from adae_stream.codecs.proto.open_inference_pb2 import InferParameter, ModelInferRequest, ModelInferResponse
from adae_stream.codecs.records import PROTOBUF, RawRecord, Request, fallback_id
from adae_stream.errors import DecodeError

# The first byte of a serialised ModelInferRequest: the tag of one of its fields 1..7, all length-delimited.
REQUEST_TAGS = frozenset(field << 3 | 2 for field in range(1, 8))
CONFLUENT_MAGIC = 0
# the family, as codecs.FAMILIES takes it (family.WireFamily)
NAME, ANSWERS, REQUEST_FORMATS = "proto", ("proto",), ("proto",)
SELDON_ANSWER_TYPE = "proto/InferModelResponse"
CONTENT_TYPES = frozenset(
    {PROTOBUF, "application/protobuf", "application/x-google-protobuf", "application/vnd.google.protobuf"}
)
TYPED_FIELD = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "BOOL": "bool_contents",
}


def sniff(record: RawRecord, value: bytes) -> bool:
    return bool(value) and (value[0] == CONFLUENT_MAGIC or value[0] in REQUEST_TAGS)


def split_framing(value: bytes) -> tuple[bytes, bytes]:
    """(schema-registry prefix, protobuf) for a framed body; (b"", value) for a bare one."""
    if not value or value[0] != CONFLUENT_MAGIC:
        return b"", value
    pos = 5  # magic byte and 4-byte schema id
    count, pos = _zigzag_varint(value, pos)
    if count < 0 or count > 64:
        raise DecodeError("decode", f"schema-registry framing declares {count} message indexes")
    for _ in range(count):  # count 0 stands for the single index [0]
        _, pos = _zigzag_varint(value, pos)
    return value[:pos], value[pos:]


def _zigzag_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise DecodeError("decode", "truncated schema-registry framing")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos


def decode(record: RawRecord, value: bytes, input_shape: tuple[int, ...] | None, max_bytes: int) -> Request:
    framing, body = split_framing(value)
    msg = ModelInferRequest()
    try:
        msg.ParseFromString(body)
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError("decode", f"not a protobuf ModelInferRequest: {str(exc)[:200]}") from None
    if len(msg.inputs) != 1:
        raise DecodeError(
            "schema", f"a ModelInferRequest with exactly one input tensor is needed, got {len(msg.inputs)}"
        )
    tensor = msg.inputs[0]
    dtype = tensors.datatype(tensor.datatype)
    declared = tensors.shape(list(tensor.shape), input_shape, max_bytes)
    raw = len(msg.raw_input_contents) > 0
    if raw:
        if len(msg.raw_input_contents) != 1:
            raise DecodeError("schema", f"{len(msg.raw_input_contents)} raw_input_contents entries for 1 input")
        x = tensors.from_bytes(msg.raw_input_contents[0], dtype, declared, "raw_input_contents")
    else:
        field = TYPED_FIELD.get(tensor.datatype.upper())
        if field is None:  # FP16 travels only as raw contents
            raise DecodeError(
                "dtype", f"datatype {tensor.datatype} has no typed contents; send it as raw_input_contents"
            )
        values = getattr(tensor.contents, field)
        if len(values) != int(np.prod(declared)):
            raise DecodeError(
                "shape",
                f"contents.{field} has {len(values)} elements but shape {declared} needs {int(np.prod(declared))}",
            )
        x = tensors.finite_float32(np.asarray(values, dtype=np.float64).reshape(declared), f"contents.{field}")
    rid = tensors.request_id(msg.id)
    return Request(
        rid or fallback_id(record),
        x,
        "proto",
        record,
        input_name=tensor.name,
        parameters={k: parameter_value(v) for k, v in msg.parameters.items()},
        raw_contents=raw,
        framing=framing,
        model=msg.model_name or None,
    )


def parameter_value(p: InferParameter) -> Any:
    choice = p.WhichOneof("parameter_choice")
    return getattr(p, choice) if choice else None


def set_parameter(p: InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


MODEL_FIELDS = ("model_name", "model_version")  # which detector answered: message fields, not parameters


def _response_head(names: tuple[str, ...], n: int, info: tuple[tuple[str, Any], ...]) -> ModelInferResponse:
    """Everything of an answer but its id and contents: model name, parameters, output metadata."""
    answer = ModelInferResponse(model_name=dict(info)["model_name"], model_version=dict(info)["model_version"])
    for key, value in info:
        if key not in MODEL_FIELDS:
            set_parameter(answer.parameters[key], value)
    for name in names:
        answer.outputs.add(name=name, datatype=tensors.RESULT_OIP[name], shape=[n])
    return answer


@functools.lru_cache(maxsize=256)
def _serialized_head(names: tuple[str, ...], n: int, info: tuple[tuple[str, Any], ...]) -> bytes:
    return _response_head(names, n, info).SerializeToString()


def encode(
    request: Request, result: dict[str, np.ndarray], info: dict[str, Any]
) -> tuple[bytes, str, list[tuple[str, bytes]]]:
    names, n = tuple(result), len(next(iter(result.values())))
    key = tuple((k, info[k]) for k in (*MODEL_FIELDS, *tensors.ANSWER_PARAMETERS))
    if request.raw_contents:
        # Serialised protobuf messages concatenate as a merge (the encoding's own rule): the head, the same
        # for every answer of n instances, is serialised once; only the id and raw contents are per answer.
        body = ModelInferResponse(
            id=request.id,
            raw_output_contents=[tensors.wire_bytes(name, values) for name, values in result.items()],
        ).SerializeToString()
        return request.framing + _serialized_head(names, n, key) + body, PROTOBUF, []
    answer = _response_head(names, n, key)
    answer.id = request.id
    for out, values in zip(answer.outputs, result.values(), strict=True):
        getattr(out.contents, TYPED_FIELD[out.datatype]).extend(values.tolist())
    return request.framing + answer.SerializeToString(), PROTOBUF, []


def encode_flagged(
    request: Request, x: np.ndarray, result: dict[str, np.ndarray], info: dict[str, Any]
) -> tuple[bytes, str]:
    """A ModelInferResponse whose first output is the instances (`input`), then the result fields."""
    msg = ModelInferResponse(model_name=info["model_name"], model_version=info["model_version"], id=request.id)
    for key in tensors.ANSWER_PARAMETERS:
        set_parameter(msg.parameters[key], info[key])
    msg.outputs.add(name="input", datatype="FP32", shape=list(x.shape))
    msg.raw_output_contents.append(x.tobytes())
    for k, v in result.items():
        msg.outputs.add(name=k, datatype=tensors.RESULT_OIP[k], shape=[len(x)])
        msg.raw_output_contents.append(tensors.wire_bytes(k, v))
    return msg.SerializeToString(), PROTOBUF


def encode_request(x: np.ndarray, fmt: str, request_id: str, input_name: str) -> tuple[bytes, str, list]:
    """A ModelInferRequest with the tensor in raw_input_contents, as Seldon's clients send it."""
    msg = ModelInferRequest(id=request_id)
    msg.inputs.add(name=input_name, datatype="FP32", shape=list(x.shape))
    msg.raw_input_contents.append(x.astype("<f4").tobytes())
    return msg.SerializeToString(), PROTOBUF, []


def decode_response(value: bytes, headers: Mapping[str, bytes]) -> dict[str, Any]:
    msg = ModelInferResponse.FromString(split_framing(value)[1])
    out: dict[str, Any] = {}
    for i, tensor in enumerate(msg.outputs):
        dtype = np.dtype(tensors.RESULT_DTYPES.get(tensor.name, np.float32)).newbyteorder("<")
        if msg.raw_output_contents:
            out[tensor.name] = np.frombuffer(msg.raw_output_contents[i], dtype=dtype).reshape(list(tensor.shape))
        else:
            out[tensor.name] = np.asarray(getattr(tensor.contents, TYPED_FIELD[tensor.datatype]), dtype=dtype)
    out["id"] = msg.id
    out["parameters"] = {k: parameter_value(v) for k, v in msg.parameters.items()}
    return out
