"""decode/encode without Kafka: formats, validation reasons, round trips."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from adae_stream.codecs import RawRecord, decode, decode_response, encode, encode_request
from adae_stream.errors import DecodeError
from tests.answer_info import ANSWER_INFO

SHAPE = (4,)
MAX = 100_000


def rec(value, headers=(), key=b"k1", offset=5):
    return RawRecord("in", 2, offset, key, value, list(headers), 1234)


def reason_of(value, headers=(), max_bytes=MAX):
    with pytest.raises(DecodeError) as ei:
        decode(rec(value, headers), SHAPE, max_bytes)
    return ei.value.reason


X = np.arange(12, dtype=np.float32).reshape(3, 4) / 7


@pytest.mark.parametrize("fmt", ["v2", "v1", "npy"])
def test_request_round_trip(fmt):
    payload, headers = encode_request(X, fmt, "abc")
    req = decode(rec(payload, headers), SHAPE, MAX)
    assert req.fmt == fmt and req.id == "abc" and req.n == 3
    np.testing.assert_array_equal(req.instances, X)
    assert req.instances.dtype == np.float32


def test_sniffing_without_content_type():
    for fmt in ("v2", "v1", "npy"):
        payload, _ = encode_request(X, fmt, "abc")
        assert decode(rec(payload), SHAPE, MAX).fmt == fmt


def test_v2_nested_data_and_int_dtypes():
    body = {
        "id": "n1",
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "INT32", "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}],
    }
    req = decode(rec(json.dumps(body).encode()), SHAPE, MAX)
    assert req.id == "n1" and req.input_name == "x"
    np.testing.assert_array_equal(req.instances, np.arange(1, 9).reshape(2, 4))


def test_id_fallbacks():
    payload = json.dumps({"instances": X.tolist()}).encode()
    assert decode(rec(payload, [("request-id", b"hdr")]), SHAPE, MAX).id == "hdr"
    assert decode(rec(payload), SHAPE, MAX).id == "k1"
    assert decode(RawRecord("in", 2, 9, None, payload, [], 0), SHAPE, MAX).id == "in-2-9"


def test_fortran_and_int_npy():
    buf = io.BytesIO()
    np.save(buf, np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)))
    req = decode(rec(buf.getvalue(), [("content-type", b"application/x-npy")]), SHAPE, MAX)
    np.testing.assert_array_equal(req.instances, np.arange(12).reshape(3, 4))


def v2(shape, data, datatype="FP32", **extra):
    return json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}], **extra}).encode()


@pytest.mark.parametrize(
    "value, headers, reason",
    [
        (b"", [], "decode"),
        (b"{bad", [], "decode"),
        (b"\xff\xfe", [("content-type", b"application/json")], "decode"),
        (b"[" * 40000 + b"]" * 40000, [], "decode"),
        (b"abc", [("content-type", b"text/plain")], "decode"),
        (b"abc", [], "decode"),
        (b"[1, 2]", [], "schema"),
        (b'{"x": 1}', [], "schema"),
        (
            json.dumps({"inputs": [{"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}] * 2}).encode(),
            [],
            "schema",
        ),
        (json.dumps({"inputs": [{"name": "a", "shape": [1, 4]}]}).encode(), [], "schema"),
        (v2("1,4", [0] * 4), [], "schema"),
        (v2([1, 4], [0] * 4, id=5), [], "schema"),
        (v2([1, 4], "abcd"), [], "schema"),
        (v2([-1, 4], [0] * 4), [], "shape"),
        (v2([10**12, 4], [0] * 4), [], "too_large"),
        (v2([2**62, 2**62], [0]), [], "too_large"),
        (v2([1, 5], [0] * 5), [], "shape"),
        (v2([2, 4], [0] * 4), [], "shape"),
        (v2([1, 4], [[0, 1], [2]]), [], "shape"),
        (v2([1, 4], ["a", "b", "c", "d"]), [], "dtype"),
        (v2([1, 4], [None, 1, 2, 3]), [], "dtype"),
        (v2([1, 4], [0] * 4, datatype="BYTES"), [], "dtype"),
        (v2([1, 4], [0] * 4, datatype=7), [], "dtype"),
        (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [NaN, 1, 2, 3]}]}', [], "non_finite"),
        (v2([1, 4], [1e300, 1, 2, 3]), [], "non_finite"),
        (json.dumps({"instances": [[1, 2, 3]]}).encode(), [], "shape"),
        (json.dumps({"instances": 5}).encode(), [], "schema"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': 'junk'", [("content-type", b"application/x-npy")], "decode"),
    ],
)
def test_rejections(value, headers, reason):
    assert reason_of(value, headers) == reason


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def test_npy_rejections():
    ct = [("content-type", b"application/x-npy")]
    assert reason_of(_npy(np.zeros((2, 5), np.float32)), ct) == "shape"
    assert reason_of(_npy(np.array(["a" * 4] * 8).reshape(2, 4)), ct) == "dtype"
    assert reason_of(_npy(np.zeros(2, dtype=[("a", "f4"), ("b", "f4"), ("c", "f4"), ("d", "f4")])), ct) == "dtype"
    assert reason_of(_npy(np.zeros((2, 4), np.complex64)), ct) == "dtype"
    assert reason_of(_npy(np.full((2, 4), np.inf, np.float32)), ct) == "non_finite"
    truncated = _npy(np.zeros((2, 4), np.float32))[:-3]
    assert reason_of(truncated, ct) == "shape"
    # a header declaring a huge shape with a tiny body: rejected by size arithmetic, nothing allocated
    header = _npy(np.zeros((1, 4), np.float32)).replace(b"(1, 4)", b"(999999999999, 4)")
    assert reason_of(header, ct) == "shape"


def test_too_large_record():
    payload, headers = encode_request(np.zeros((100, 4)), "v2", "big")
    assert reason_of(payload, headers, max_bytes=len(payload) - 1) == "too_large"


def test_encode_families_and_response_round_trip():
    result = {
        "prediction": np.array([1, 2, 0]),
        "corrected": np.array([1, 2, 0]),
        "is_adversarial": np.array([True, False, True]),
        "instance_score": np.array([0.5, 0.01, 3.0], np.float32),
        "no_defense": np.array([1, 2, 2]),
        "defense": np.array([0, 2, 0]),
    }
    info = {**ANSWER_INFO, "model_version": "4", "threshold": 0.25, "detector_version": "0.1.0"}
    for fmt in ("v2", "v1", "npy"):
        payload, headers = encode_request(X, fmt, "id-9")
        req = decode(rec(payload, headers), SHAPE, MAX)
        body, out_headers = encode(req, result, info)
        h = dict(out_headers)
        assert h["request-id"] == b"id-9"
        assert h["content-type"] == (b"application/x-npy" if fmt == "npy" else b"application/json")
        back = decode_response(body, out_headers)
        assert back["id"] == "id-9"
        for k, v in result.items():
            np.testing.assert_array_equal(back[k], v)
    req = decode(rec(*encode_request(X, "v2", "q")), SHAPE, MAX)
    body = json.loads(encode(req, {k: result[k] for k in ("prediction", "is_adversarial")}, info)[0])
    assert [o["name"] for o in body["outputs"]] == ["prediction", "is_adversarial"]
    assert (body["model_name"], body["model_version"]) == ("m", "4")
    assert body["parameters"] == {
        "threshold": 0.25,
        "detector_version": "0.1.0",
        "detector_id": "d1",
        "classifier_id": "c1",
        "prediction": "corrected",
    }
    assert body["outputs"][0]["shape"] == [3]


def test_npy_headers_parsed_once_still_decode_each_body_and_reject_each_bad_one():
    """decode caches parsed .npy headers: same-shape requests must still get their own data, a bad
    header must be rejected every time, and version 2.0 headers must read like 1.0 ones."""
    ct = [("content-type", b"application/x-npy")]
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = rng.normal(size=(3, 4)).astype(np.float32)
        np.testing.assert_array_equal(decode(rec(_npy(x), ct), SHAPE, MAX).instances, x)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, X, version=(2, 0))
    np.testing.assert_array_equal(decode(rec(buf.getvalue(), ct), SHAPE, MAX).instances, X)
    bad = b"\x93NUMPY\x01\x00\x10\x00{'descr': 'junk'"
    assert [reason_of(bad, ct) for _ in range(2)] == ["decode", "decode"]
    assert reason_of(b"\x93NUMPY\x03\x00" + _npy(X)[8:], ct) == "decode"


@pytest.mark.parametrize("n", [0, 1, 3, 1000])
def test_npy_answer_is_exactly_what_numpy_writes(n):
    """The answer's .npy preamble is built once per (fields, n); the bytes must match np.save's."""
    result = {
        "corrected": np.arange(n),
        "is_adversarial": np.arange(n) % 2 == 0,
        "instance_score": np.linspace(0, 1, n, dtype=np.float32),
    }
    req = decode(rec(*encode_request(np.zeros((n, 4), np.float32), "npy", "r")), SHAPE, 10**6)
    body, _ = encode(
        req,
        result,
        ANSWER_INFO,
    )
    expected = np.zeros(
        n, dtype=[("corrected", np.int64), ("is_adversarial", np.bool_), ("instance_score", np.float32)]
    )
    for k, v in result.items():
        expected[k] = v
    assert body == _npy(expected)
