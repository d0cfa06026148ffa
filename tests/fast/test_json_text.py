"""codecs/json_text.py reads what the standard library reads, as it reads it, and writes JSON that reads
back to the same values (hypothesis against the standard library as the oracle)."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from adae_stream.codecs import json_text

U64 = 2**64
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), U64 - 1),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["\ud800", "a\udfffb"]),  # lone surrogates: orjson refuses them, the standard library reads them
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=30,
)


def same(a, b) -> bool:
    """Equal, NaN equal to NaN, and of the same JSON type (1 is not 1.0, True is not 1)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=100, deadline=None)
@given(value=values, encoding=st.sampled_from(["utf-8", "utf-16", "utf-32"]), spaced=st.booleans())
def test_reads_what_the_standard_library_reads(value, encoding, spaced):
    text = json.dumps(value, separators=(", ", ": ") if spaced else (",", ":"))
    raw = text.encode(encoding)
    assert same(json_text.loads(raw), json.loads(raw))


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=60))
def test_refuses_what_the_standard_library_refuses(raw):
    try:
        expected = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        try:
            json_text.loads(raw)
        except type(exc) as got:
            assert str(got) == str(exc)  # the standard library's message: the dead letter says the same as before
        else:
            raise AssertionError(f"read {raw!r}, which json refuses")
    else:
        assert same(json_text.loads(raw), expected)


def test_integers_beyond_64_bits_read_as_the_nearest_double():
    """The one reading that differs: orjson gives such an integer as a float (json kept it exact, which
    numpy then refused as non-numeric); a request's number is float32 either way."""
    assert json_text.loads(b"[18446744073709551616]") == [float(U64)]


@settings(max_examples=100, deadline=None)
@given(value=values)
def test_writes_json_that_reads_back(value):
    out = json_text.dumps(value)
    assert isinstance(out, bytes)
    back = json.loads(out)
    if "NaN" in json.dumps(value) or "Infinity" in json.dumps(value):
        return  # orjson writes a non-finite float as null (json.dumps wrote NaN, which is not JSON)
    assert same(back, value)


def test_non_finite_floats_are_written_as_null():
    assert json.loads(json_text.dumps({"s": [float("nan"), float("inf"), 1.5]})) == {"s": [None, None, 1.5]}
