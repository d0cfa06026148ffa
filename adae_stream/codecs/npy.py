""".npy requests and answers: an array (n, ...) of any plain numeric dtype in, a structured array out."""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from adae_stream.codecs import tensors
from adae_stream.codecs.records import NPY, RawRecord, Request, fallback_id
from adae_stream.errors import DecodeError

NPY_MAGIC = b"\x93NUMPY"
# the family, as codecs.FAMILIES takes it (family.WireFamily)
NAME, CONTENT_TYPES, ANSWERS, REQUEST_FORMATS, SELDON_ANSWER_TYPE = "npy", frozenset({NPY}), ("npy",), ("npy",), ""


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


def decode(record: RawRecord, value: bytes, input_shape: tuple[int, ...] | None, max_bytes: int) -> Request:
    """max_bytes bounds a declared shape in the other families; here the body's own size (checked before
    any family is tried) already bounds the array."""
    preamble = _npy_preamble(value)
    shape, fortran, dtype = _parse_npy_preamble(preamble)
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "fiu":
        raise DecodeError("dtype", f".npy dtype {dtype} is not a plain numeric type")
    if len(shape) == 0:
        raise DecodeError("shape", f".npy shape {list(shape)} holds no instances axis")
    if input_shape is not None and tuple(shape[1:]) != tuple(input_shape):
        raise tensors.shape_mismatch(f".npy shape {list(shape)}", input_shape)
    count = math.prod(shape)
    offset = len(preamble)
    if count * dtype.itemsize != len(value) - offset:
        raise DecodeError(
            "shape",
            f".npy body has {len(value) - offset} bytes but shape {list(shape)} x {dtype} needs "
            f"{count * dtype.itemsize}",
        )
    a = np.frombuffer(value, dtype=dtype, count=count, offset=offset).reshape(shape, order="F" if fortran else "C")
    return Request(fallback_id(record), tensors.finite_float32(a, ".npy array"), "npy", record)


@functools.lru_cache(maxsize=32)
def _result_dtype(names: tuple[str, ...]) -> np.dtype:
    return np.dtype([(k, tensors.RESULT_DTYPES[k]) for k in names])


@functools.lru_cache(maxsize=256)
def _npy_result_header(names: tuple[str, ...], n: int) -> bytes:
    """The .npy preamble np.lib.format.write_array would write for n records of these fields, built once
    per (fields, n) instead of per answer (its repr-and-pad costs as much as the rest of the encode)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, np.lib.format.header_data_from_array_1_0(np.empty(n, dtype=_result_dtype(names)))
    )
    return buf.getvalue()


def encode(
    request: Request, result: dict[str, np.ndarray], info: dict[str, Any]
) -> tuple[bytes, str, list[tuple[str, bytes]]]:
    names = tuple(result)
    n = len(result[names[0]])
    arr = np.empty(n, dtype=_result_dtype(names))
    for k in names:
        arr[k] = result[k]
    return _npy_result_header(names, n) + arr.tobytes(), NPY, []


def encode_flagged(
    request: Request, x: np.ndarray, result: dict[str, np.ndarray], info: dict[str, Any]
) -> tuple[bytes, str]:
    """One structured array: the instances as `input` beside their result fields."""
    arr = np.empty(len(x), dtype=[("input", "<f4", x.shape[1:]), *[(k, tensors.RESULT_DTYPES[k]) for k in result]])
    arr["input"] = x
    for k, v in result.items():
        arr[k] = v
    return _write(arr), NPY


def encode_request(x: np.ndarray, fmt: str, request_id: str, input_name: str) -> tuple[bytes, str, list]:
    """The array itself: .npy has no place for an id or an input name (the request-id header carries the id)."""
    return _write(np.ascontiguousarray(x)), NPY, []


def decode_response(value: bytes, headers: Mapping[str, bytes]) -> dict[str, Any]:
    arr = np.lib.format.read_array(io.BytesIO(value), allow_pickle=False)
    out: dict[str, Any] = {k: arr[k] for k in arr.dtype.names or ()}
    out["id"] = headers.get("request-id", b"").decode()
    return out


def _write(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def sniff(record: RawRecord, data: bytes) -> bool:
    return data.startswith(NPY_MAGIC)
