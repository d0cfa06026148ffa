"""The codec registry: a new wire family is one module (here a class) and one registry entry, nothing else.

A toy CSV family is added beside the real ones; everything the pipeline does with a family (recognise a
request by content-type and by its body, answer it, capture flagged instances, build requests on the
client side, read answers back) then works for it, and the real families behave as before.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from adae_stream.codecs import FAMILIES, REQUEST_FORMATS, Codecs, RawRecord, Request
from adae_stream.codecs.family import WireFamily
from adae_stream.codecs.records import fallback_id
from adae_stream.codecs.tensors import RESULT_DTYPES, finite_float32
from adae_stream.errors import DecodeError, UnreadableAnswer
from tests.answer_info import ANSWER_INFO

CSV = "text/csv"


def _decode(record: RawRecord, data: bytes, input_shape: tuple[int, ...] | None, max_bytes: int) -> Request:
    try:
        rows = [[float(v) for v in row] for row in csv.reader(io.StringIO(data.decode()))]
    except ValueError as exc:
        raise DecodeError("decode", f"not CSV: {exc}") from None
    return Request(fallback_id(record), finite_float32(np.asarray(rows), "csv"), "csv", record)


def _table(columns: Mapping[str, np.ndarray]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows(zip(*(v.tolist() for v in columns.values()), strict=True))
    return buf.getvalue().encode()


def _decode_response(value: bytes, headers: Mapping[str, bytes]) -> dict[str, Any]:
    rows = list(csv.DictReader(io.StringIO(value.decode())))
    out: dict[str, Any] = {k: np.asarray([r[k] for r in rows], dtype=RESULT_DTYPES[k]) for k in rows[0]}
    out["id"] = headers["request-id"].decode()
    return out


class Toy:
    """A family as any object with family.WireFamily's names (a real one is a module)."""

    NAME, CONTENT_TYPES, ANSWERS, REQUEST_FORMATS, SELDON_ANSWER_TYPE = "csv", frozenset({CSV}), ("csv",), ("csv",), ""

    @staticmethod
    def sniff(record: RawRecord, data: bytes) -> bool:
        return data[:1].isdigit() or data[:1] == b"-"

    decode = staticmethod(_decode)
    decode_response = staticmethod(_decode_response)

    @staticmethod
    def encode(request: Request, result: dict, info: dict) -> tuple[bytes, str, list]:
        return _table(result), CSV, []

    @staticmethod
    def encode_flagged(request: Request, x: np.ndarray, result: dict, info: dict) -> tuple[bytes, str]:
        return _table({"input_0": x[:, 0], **result}), CSV

    @staticmethod
    def encode_request(x: np.ndarray, fmt: str, request_id: str, input_name: str) -> tuple[bytes, str, list]:
        return "\n".join(",".join(map(repr, row)) for row in x.tolist()).encode(), CSV, []


TOY: WireFamily = Toy()


def _record(value: bytes, headers: list[tuple[str, bytes]]) -> RawRecord:
    return RawRecord("in", 0, 7, None, value, headers)


def _result(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {k: (rng.random(n) * 5).astype(v) for k, v in RESULT_DTYPES.items()}


@pytest.mark.parametrize("named", [True, False], ids=["content-type", "sniffed"])
def test_a_family_added_to_the_registry_serves_every_codec_operation(named: bool) -> None:
    codecs = Codecs((*FAMILIES, TOY))
    assert codecs.request_formats == (*REQUEST_FORMATS, "csv")
    x = np.array([[1.5, -2.0], [3.0, 4.25]], dtype=np.float32)
    value, headers = codecs.encode_request(x, "csv", "r-9")
    if not named:
        headers = [(k, v) for k, v in headers if k != "content-type"]
    request = codecs.decode(_record(value, headers), (2,), 1 << 20)
    assert (request.fmt, request.id) == ("csv", "r-9")
    np.testing.assert_array_equal(request.instances, x)

    result = _result(2)
    body, answer_headers = codecs.encode(request, result, ANSWER_INFO)
    assert dict(answer_headers)["content-type"] == CSV.encode()
    answer = codecs.decode_response(body, answer_headers)
    assert answer["id"] == "r-9"
    for k, v in result.items():
        np.testing.assert_array_equal(answer[k], v)

    flagged, flagged_headers = codecs.encode_flagged(request, x, result, ANSWER_INFO)
    assert b"input_0" in flagged.splitlines()[0]
    assert dict(flagged_headers)["source-offset"] == b"7"


def test_the_registry_without_a_family_does_not_know_it() -> None:
    """The toy's requests are refused by the registry it is not in: its line is what made them work."""
    x = np.ones((1, 2), dtype=np.float32)
    value, headers = Codecs((*FAMILIES, TOY)).encode_request(x, "csv", "r-1")
    with pytest.raises(DecodeError, match="unsupported content-type 'text/csv'"):
        Codecs(FAMILIES).decode(_record(value, headers), (2,), 1 << 20)
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        Codecs(FAMILIES).encode_request(x, "csv", "r-1")
    with pytest.raises(UnreadableAnswer):
        Codecs(FAMILIES).decode_response(b"corrected\n1\n", [("content-type", CSV.encode())])


def test_the_real_families_answer_alike_with_a_new_family_beside_them() -> None:
    codecs, extended = Codecs(FAMILIES), Codecs((*FAMILIES, TOY))
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    result = _result(4)
    for fmt in REQUEST_FORMATS:
        value, headers = codecs.encode_request(x, fmt, f"id-{fmt}")
        assert extended.encode_request(x, fmt, f"id-{fmt}") == (value, headers)
        record = _record(value, headers)
        request, other = codecs.decode(record, (2,), 1 << 20), extended.decode(record, (2,), 1 << 20)
        assert (request.fmt, request.id) == (other.fmt, other.id)
        np.testing.assert_array_equal(request.instances, other.instances)
        assert codecs.encode(request, result, ANSWER_INFO) == extended.encode(other, result, ANSWER_INFO)


def test_two_families_cannot_claim_one_name() -> None:
    class ClaimsJson(Toy):
        CONTENT_TYPES = frozenset({"application/json"})

    class ClaimsV1(Toy):
        REQUEST_FORMATS = ("v1",)

    with pytest.raises(ValueError, match="both claim CONTENT_TYPES 'application/json'"):
        Codecs((*FAMILIES, ClaimsJson()))
    with pytest.raises(ValueError, match="both claim REQUEST_FORMATS 'v1'"):
        Codecs((*FAMILIES, ClaimsV1()))
