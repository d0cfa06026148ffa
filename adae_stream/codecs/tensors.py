"""Tensor checks shared by the Open Inference Protocol families (JSON, Triton binary, protobuf).

Declared shapes are checked against the limits and the body before anything is allocated from them;
conversion is vectorised numpy, never a per-element Python loop.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from adae_stream import scoring
from adae_stream.errors import DecodeError

# OIP datatypes the detector can score, as little-endian numpy types (raw and binary contents are LE).
OIP_DTYPES = {
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}
# What every answer says about the detector that gave it (V2/V1 parameters, protobuf parameters; npy headers).
ANSWER_PARAMETERS = ("threshold", "detector_version", "detector_id", "classifier_id", "prediction")
# Answer fields: numpy type and OIP datatype (the scorer's results, and where an answer holds a subset of
# the request's instances, their positions in it).
INSTANCE_INDEX = "instance_index"
RESULT_DTYPES: dict[str, type[np.generic]] = {
    scoring.PREDICTION: np.int64,
    **scoring.RESULT_DTYPES,
    INSTANCE_INDEX: np.int64,
}
_OIP_NAMES = {np.int64: "INT64", np.bool_: "BOOL", np.float32: "FP32"}
RESULT_OIP = {name: _OIP_NAMES[dtype] for name, dtype in RESULT_DTYPES.items()}


def wire_dtype(name: str) -> np.dtype:
    """A result field's dtype in raw and binary contents, which OIP and Triton define as little-endian."""
    return np.dtype(RESULT_DTYPES[name]).newbyteorder("<")


def wire_bytes(name: str, values: np.ndarray) -> bytes:
    """A result field's values as raw or binary contents."""
    return values.astype(wire_dtype(name), copy=False).tobytes()


def datatype(dt: Any) -> np.dtype:
    if not isinstance(dt, str) or dt.upper() not in OIP_DTYPES:
        raise DecodeError("dtype", f"datatype {dt!r} is not numeric (one of {', '.join(sorted(OIP_DTYPES))})")
    return np.dtype(OIP_DTYPES[dt.upper()])


def shape(declared: Any, input_shape: tuple[int, ...] | None, max_bytes: int) -> list[int]:
    """A declared shape, checked before anything is allocated from it (against the detector's input when
    it is known; a record routed after decoding is checked by ``conform``)."""
    if (
        not isinstance(declared, (list, tuple))
        or not declared
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in declared)
    ):
        raise DecodeError("schema", f"shape must be a non-empty list of integers, got {str(declared)[:200]}")
    declared = list(declared)
    if any(d < 0 for d in declared):
        raise DecodeError("shape", f"negative dimension in shape {declared}")
    if math.prod(declared) > max_bytes:  # every element takes at least one byte of the body: never allocate beyond it
        raise DecodeError("too_large", f"declared shape {declared} has more elements than the record could carry")
    if input_shape is not None and tuple(declared[1:]) != tuple(input_shape):
        raise shape_mismatch(f"declared shape {declared}", input_shape)
    return declared


def shape_mismatch(what: str, input_shape: tuple[int, ...]) -> DecodeError:
    return DecodeError("shape", f"{what} does not match the detector's input (n, {', '.join(map(str, input_shape))})")


def conform(x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Instances decoded before their detector was known, checked against that detector's input."""
    if x.shape[1:] == tuple(input_shape):
        return x
    if x.size == 0 and x.ndim == 1:  # an empty V1 list
        return x.reshape((0, *input_shape))
    raise shape_mismatch(f"instances of shape {list(x.shape)}", input_shape)


def from_bytes(buf: bytes | memoryview, dtype: np.dtype, declared: list[int], field: str) -> np.ndarray:
    """Raw (protobuf) or binary (Triton) contents: little-endian, row-major, no padding."""
    need = math.prod(declared) * dtype.itemsize
    if len(buf) != need:
        raise DecodeError("shape", f"{field} has {len(buf)} bytes but shape {declared} x {dtype} needs {need}")
    return finite_float32(np.frombuffer(buf, dtype=dtype).reshape(declared), field)


def finite_float32(a: np.ndarray, field: str) -> np.ndarray:
    out = a.astype(np.float32)  # copies: the record's buffer is not kept alive
    if not np.isfinite(out).all():
        raise DecodeError("non_finite", f"{field} contains NaN or infinite values (or values beyond float32 range)")
    return out


def is_unicode(text: str) -> bool:
    """json.loads accepts lone surrogate escapes ("\\ud800"), which no UTF-8 answer or header can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def request_id(rid: Any) -> str | None:
    """A request id from a body, checked: a string of valid Unicode, or absent."""
    if rid is None or rid == "":
        return None
    if not isinstance(rid, str):
        raise DecodeError("schema", "'id' must be a string")
    if not is_unicode(rid):
        raise DecodeError("schema", "'id' is not valid Unicode (it holds a lone surrogate escape such as \\ud800)")
    return rid
