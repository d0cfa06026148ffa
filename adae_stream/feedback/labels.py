"""The feedback record: the true labels of an earlier request, ``{"id": "<request id>", "labels": [<int>, ...]}``,
one label per instance in request order. Labels may come minutes or hours after the answer, more than once, for
unknown ids, or never, and to any replica of the group."""

from __future__ import annotations

import numpy as np

from adae_stream.codecs.records import parse_json
from adae_stream.errors import DecodeError

MAX_LABELS = 1_000_000


def parse_feedback(value: bytes | None) -> tuple[str, np.ndarray]:
    """(request id, labels) of a feedback record, or DecodeError with a dead-letter reason."""
    if not value:
        raise DecodeError("decode", "empty feedback record")
    body = parse_json(value, "feedback")
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
        raise DecodeError("schema", 'feedback must be {"id": "<request id>", "labels": [<int>, ...]}')
    labels = body.get("labels")
    if not isinstance(labels, list) or len(labels) > MAX_LABELS:
        raise DecodeError("schema", "feedback 'labels' must be a list of integer class labels")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 for v in labels):
        raise DecodeError("dtype", "feedback 'labels' must be non-negative integers")
    return body["id"], np.asarray(labels, dtype=np.int64)
