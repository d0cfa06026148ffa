"""Property-based fuzzing of the decoders and encoders (hypothesis).

Whatever bytes and headers come in, decode either returns a request that encode can answer in its own
family (and the answer parses back to the same id and instance count), raises the decoder's own
DecodeError, or says NotARequest (a response sharing the topic). Every family is covered: JSON, npy,
protobuf (bare and framed), Triton binary JSON, CloudEvents binary and structured. Nothing else may
escape: any other exception would be a record able to reach the loop's last-resort boundary, i.e. a bug.
"""

from __future__ import annotations

import io
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adae_stream.codecs import (
    REQUEST_FORMATS,
    RESULT_DTYPES,
    RawRecord,
    decode,
    decode_response,
    encode,
    encode_request,
)
from adae_stream.errors import DECODE_REASONS, SKIP_KINDS, DecodeError, NotARequest, UnreadableAnswer
from tests.answer_info import ANSWER_INFO

SHAPE = (2, 2)
MAX_BYTES = 64 * 1024
INFO = ANSWER_INFO
FIELDS = list(RESULT_DTYPES)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\ud800", "a\udfffb", "", "x" * 5000]),
    st.integers(),
    st.none(),
    st.floats(),
    st.lists(st.integers(), max_size=2),
)
header_values = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"application/json",
            b"application/x-npy",
            b"application/vnd.kserve.v2+json; charset=utf-8",
            b"\xff\xfe\x00",
            b"",
        ]
    ),
)
header_lists = st.lists(
    st.tuples(
        st.sampled_from(["content-type", "request-id", "Content-Type", "x-trace", "error-reason"]), header_values
    ),
    max_size=4,
)
keys = st.one_of(st.none(), st.binary(max_size=30))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=30,
)


def record_values(max_bytes: int, fields: dict) -> st.SearchStrategy[bytes]:
    """Record values: any bytes, any JSON, or JSON objects with these fields (each its own strategy)."""
    return st.one_of(
        st.binary(max_size=max_bytes),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(fields).map(lambda v: json.dumps(v).encode()),
    )


def check(value: bytes, headers, key) -> None:
    record = RawRecord("in", 1, 42, key, value, headers, 1000)
    try:
        req = decode(record, SHAPE, MAX_BYTES)
    except DecodeError as exc:
        assert exc.reason in DECODE_REASONS and exc.message
        return
    except NotARequest as exc:  # a response sharing the topic: counted and skipped
        assert exc.kind in SKIP_KINDS
        return
    assert req.instances.shape == (req.n, *SHAPE) and req.instances.dtype == np.float32
    assert np.isfinite(req.instances).all()
    result = {k: np.zeros(req.n, RESULT_DTYPES[k]) for k in FIELDS}
    payload, out_headers = encode(req, result, INFO)
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in out_headers)
    answer = decode_response(payload, out_headers)
    assert answer["id"] == req.id and len(answer["corrected"]) == req.n


@SETTINGS
@given(value=st.binary(max_size=300), headers=header_lists, key=keys)
def test_any_bytes_decode_to_an_answerable_request_or_a_decode_error(value, headers, key):
    check(value, headers, key)


def v2_body(rid, shape, datatype, data, extra) -> dict:
    body = {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}], **extra}
    if rid is not None:
        body["id"] = rid
    return body


@SETTINGS
@given(
    rid=ids,
    n=st.integers(0, 3),
    datatype=st.sampled_from(["FP32", "INT8", "UINT64", "BOOL", "BYTES", 7, "fp16"]),
    data=st.one_of(st.none(), json_values, st.lists(st.floats(width=32), max_size=16)),
    shape=st.one_of(st.none(), st.lists(st.integers(-2, 4), max_size=4)),
    extra=st.dictionaries(st.sampled_from(["parameters", "outputs", "id", "inputs"]), json_values, max_size=2),
    headers=header_lists,
    key=keys,
    allow_nan=st.booleans(),
)
def test_v2_json_bodies(rid, n, datatype, data, shape, extra, headers, key, allow_nan):
    if data is None:
        data = np.linspace(-1, 1, n * 4).tolist()
    body = v2_body(rid, [n, *SHAPE] if shape is None else shape, datatype, data, extra)
    check(json.dumps(body, allow_nan=allow_nan).encode() if allow_nan or _finite(body) else b"{}", headers, key)


def _finite(body) -> bool:
    try:
        json.dumps(body, allow_nan=False)
    except ValueError:
        return False
    return True


@SETTINGS
@given(instances=json_values, headers=header_lists, key=keys)
def test_v1_json_bodies(instances, headers, key):
    check(json.dumps({"instances": instances}).encode(), headers, key)


@SETTINGS
@given(
    dtype=st.sampled_from(["<f4", ">f8", "<i2", "|u1", "<c8", "|b1", "<M8[s]", "|S3", "<U2", "|V4"]),
    shape=st.lists(st.integers(0, 3), max_size=4),
    fortran=st.booleans(),
    cut=st.integers(-8, 8),
    flip=st.integers(0, 200),
    headers=header_lists,
    key=keys,
)
def test_npy_bodies(dtype, shape, fortran, cut, flip, headers, key):
    arr = np.zeros(shape, dtype=dtype)
    if fortran:
        arr = np.asfortranarray(arr)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    value = bytearray(buf.getvalue())
    if cut > 0:
        value = value[:-cut]
    if flip < len(value) and flip % 3 == 0:
        value[flip] ^= 0xFF  # damage the header or the body
    check(bytes(value), [("content-type", b"application/x-npy"), *headers], key)


def test_fuzzers_reach_both_outcomes():
    """check() sees both outcomes: a good request, a lone-surrogate id, and a body nested 100,000 deep."""
    good = json.dumps(v2_body("a", [1, *SHAPE], "FP32", [0.0] * 4, {})).encode()
    record = RawRecord("in", 0, 0, None, good, [], 0)
    assert decode(record, SHAPE, MAX_BYTES).n == 1
    for bad in (json.dumps(v2_body("\ud800", [1, *SHAPE], "FP32", [0.0] * 4, {})).encode(), b"[" * 100_000):
        try:
            decode(RawRecord("in", 0, 0, None, bad, [], 0), SHAPE, 1024 * 1024)
        except DecodeError as exc:
            assert exc.reason in ("schema", "decode")
        else:
            raise AssertionError("accepted a bad record")


def _proto_request(x: np.ndarray, rid: str, raw: bool) -> bytes:
    from adae_stream.codecs.proto.open_inference_pb2 import ModelInferRequest

    msg = ModelInferRequest(id=rid)
    tensor = msg.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    if raw:
        msg.raw_input_contents.append(x.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    return msg.SerializeToString()


@SETTINGS
@given(
    n=st.integers(0, 3),
    raw=st.booleans(),
    rid=st.text(max_size=10),
    framing=st.sampled_from([b"", b"\x00\x00\x00\x00\x01\x00", b"\x00\x00\x00\x00\x01\x04\x02\x06", b"\x00\x01"]),
    cut=st.integers(0, 12),
    flips=st.lists(st.integers(0, 400), max_size=3),
    headers=header_lists,
    key=keys,
)
def test_protobuf_bodies(n, raw, rid, framing, cut, flips, headers, key):
    value = bytearray(framing + _proto_request(np.ones((n, *SHAPE), np.float32), rid, raw))
    if cut:
        value = value[:-cut]
    for i in flips:
        if i < len(value):
            value[i] ^= 0x5A
    check(bytes(value), [("content-type", b"application/x-protobuf"), *headers], key)
    check(bytes(value), headers, key)  # sniffed


@SETTINGS
@given(value=st.binary(min_size=1, max_size=200), headers=header_lists, key=keys)
def test_bytes_that_look_like_protobuf(value, headers, key):
    check(b"\x2a" + value, headers, key)  # tag of field 5 (inputs): the protobuf sniffer takes it
    check(b"\x00" + value, headers, key)  # schema-registry magic


@SETTINGS
@given(
    body=st.one_of(st.binary(max_size=100), json_values.map(lambda v: json.dumps(v).encode())),
    tail=st.binary(max_size=64),
    size=st.one_of(st.none(), st.integers(-4, 80), st.text(max_size=3)),
    length=st.one_of(st.none(), st.integers(-3, 400), st.binary(max_size=6)),
    headers=header_lists,
    key=keys,
)
def test_triton_binary_bodies(body, tail, size, length, headers, key):
    prefix = json.dumps(
        {
            "id": "t",
            "inputs": [
                {
                    "name": "x",
                    "shape": [len(tail) // 16, *SHAPE],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ],
        }
    ).encode()
    for text in (prefix, body):
        declared = (
            []
            if length is None
            else [("Inference-Header-Content-Length", length if isinstance(length, bytes) else str(length).encode())]
        )
        check(text + tail, [*declared, *headers], key)


@SETTINGS
@given(
    attributes=st.dictionaries(
        st.sampled_from(["id", "type", "source", "specversion", "datacontenttype", "namespace"]),
        st.one_of(st.text(max_size=12), st.integers(), st.none()),
        max_size=6,
    ),
    data=st.one_of(st.none(), json_values, st.binary(max_size=60)),
    base64_data=st.booleans(),
    headers=header_lists,
    key=keys,
)
def test_cloudevent_bodies(attributes, data, base64_data, headers, key):
    import base64 as b64

    event = dict(attributes)
    if isinstance(data, bytes):
        event["data_base64" if base64_data else "data"] = (
            b64.b64encode(data).decode() if base64_data else data.decode("latin-1")
        )
    elif data is not None:
        event["data"] = data
    check(json.dumps(event).encode(), [("content-type", b"application/cloudevents+json"), *headers], key)
    binary = [("ce_" + k, str(v).encode("utf-8", "surrogatepass")) for k, v in attributes.items()]
    check(
        json.dumps(data).encode() if not isinstance(data, bytes) else data or b"x",
        [("ce_specversion", b"1.0"), *binary, *headers],
        key,
    )


@SETTINGS
@given(
    value=record_values(
        80,
        {
            "id": st.one_of(st.text(max_size=8), st.integers()),
            "labels": st.one_of(st.lists(st.integers(-3, 2**40), max_size=5), json_values),
        },
    )
)
def test_feedback_records_parse_or_raise_a_decode_error(value):
    from adae_stream.feedback.join import FeedbackJoin, LabelRecord
    from adae_stream.feedback.labels import parse_feedback

    try:
        request_id, labels = parse_feedback(value)
    except DecodeError as exc:
        assert exc.reason in DECODE_REASONS
        return
    assert isinstance(request_id, str) and labels.dtype == np.int64 and (labels >= 0).all()
    join = FeedbackJoin(60, 100, clock=lambda: 0.0)
    join.remember(
        request_id,
        {k: np.zeros(len(labels), np.int64) for k in ("no_defense", "defense", "corrected", "is_adversarial")},
    )
    ((_, outcome),) = join.submit(LabelRecord("labels", 0, 0, None, 0.0, request_id, labels))
    assert outcome.result == "joined" or len(labels) == 0


answer_content_types = st.sampled_from(
    [
        b"application/json",
        b"application/x-npy",
        b"application/x-protobuf",
        b"application/cloudevents+json",
        b"application/vnd.kserve.v2+json",
        b"",
    ]
)


@SETTINGS
@given(
    value=record_values(200, {k: json_values for k in ("id", "outputs", "predictions", "data")}),
    content_type=answer_content_types,
    headers=header_lists,
)
def test_anything_on_the_output_topic_is_an_answer_or_an_unreadable_answer(value, content_type, headers):
    """The output topic's readers skip what they cannot read with one except clause: nothing else escapes."""
    try:
        answer = decode_response(value, [("content-type", content_type), *headers])
    except UnreadableAnswer as exc:
        assert str(exc).startswith("not an answer: ")  # says what failed, in one line
        return
    assert isinstance(answer["id"], str)


@SETTINGS
@given(
    fmt=st.sampled_from(REQUEST_FORMATS),
    n=st.integers(1, 5),
    rid=st.text(min_size=1, max_size=20),
    values=st.lists(st.floats(-1e6, 1e6, width=32), min_size=20, max_size=20),
)
def test_every_request_our_encoders_build_decodes_to_the_same_instances_and_id(fmt, n, rid, values):
    """The round trip the decode-or-reject properties above cannot show: a decoder that rejected every
    valid body would pass them, not this."""
    x = np.resize(np.asarray(values, np.float32), (n, *SHAPE))
    payload, headers = encode_request(x, fmt, rid)
    req = decode(RawRecord("in", 0, 7, rid.encode("utf-8", "surrogatepass"), payload, headers, 1000), SHAPE, MAX_BYTES)
    assert req.id == rid
    np.testing.assert_array_equal(req.instances, x)  # float32 in, float32 out: exact in every family
    assert req.fmt == ("v2" if fmt == "triton" else fmt)
