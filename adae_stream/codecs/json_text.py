"""JSON text for the record path: orjson where it reads the bytes, the standard library where it does not.

Why orjson: on a 64 x 20 V2 JSON request (25 KB) the standard library's json.loads took 221 us and the
answer's json.dumps 38 us, together ~70 % of the loop's CPU per request (the model call was 36 us of a
1024-instance batch per request); orjson takes 24 us and 3 us (benchmarks/RESULTS.md, "End to end
against the transport").

Why a fallback: orjson refuses what the standard library reads and the codecs then judge with a precise
reason: NaN and Infinity literals (refused as non_finite, not as bad JSON), lone surrogate escapes
("\\ud800", refused by the id check), JSON in UTF-16 or UTF-32. Only such records (and bad JSON) pay for
the second parse, and the error a bad record gets is the standard library's, as before.

Answers are written by orjson: the same numbers (the shortest text that reads back as the same double),
without spaces; a non-finite float becomes null, where json.dumps wrote NaN, which is not JSON. What
orjson cannot write (a lone surrogate a request carried in a CloudEvent attribute, an integer beyond 64
bits) the standard library writes, as before.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(value: bytes | bytearray | memoryview | str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return json.loads(bytes(value) if isinstance(value, memoryview) else value)


def dumps(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return json.dumps(body, separators=(",", ":")).encode()
