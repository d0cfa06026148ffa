"""What every wire family shares: the record as read, the decoded request, header lookups and ids."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adae_stream.codecs import json_text
from adae_stream.errors import DecodeError

JSON, NPY, PROTOBUF, OCTET_STREAM = (
    "application/json",
    "application/x-npy",
    "application/x-protobuf",
    "application/octet-stream",
)
CLOUDEVENTS_JSON = "application/cloudevents+json"
# Request headers an answer carries back, so callers and platforms can correlate: Seldon's `pipeline`
# (a model's topic is shared by the pipelines that use it), `x-request-id` and every caller `x-*`
# header, and W3C trace context.
ECHOED = ("pipeline", "traceparent", "tracestate")


@dataclass(frozen=True)
class RawRecord:
    """The fields of a Kafka record the pipeline uses (kafka-python's ConsumerRecord has the same names)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()
    timestamp: int = -1

    @functools.cached_property
    def header_map(self) -> dict[str, bytes | None]:
        """Headers by lower-cased name (the first of a repeated name), built once: decoding asks for
        about six headers per record, most of them absent."""
        out: dict[str, bytes | None] = {}
        for k, v in self.headers or ():
            out.setdefault(k.lower(), v)
        return out


@dataclass(frozen=True)
class Envelope:
    """A CloudEvent around the request (KServe's payload logger, Knative's Kafka broker or sink)."""

    mode: str  # "binary" (ce_* headers) | "structured" (the event is the record's JSON value)
    attributes: dict[str, Any]  # every attribute but data, as received (id, type, source, extensions...)


@dataclass(eq=False)
class Request:
    id: str
    instances: np.ndarray  # float32 (n, *input_shape)
    fmt: str  # the answer's body family: "v2" | "v1" | "npy" | "proto"
    record: RawRecord
    input_name: str | None = None
    arrival: float = 0.0  # monotonic time the record was polled (for batching deadlines)
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_outputs: frozenset[str] = frozenset()  # v2 (Triton): outputs to send in the binary tail ("*": all)
    raw_contents: bool = True  # proto: answer in raw_output_contents (as the request did) or typed contents
    framing: bytes = b""  # proto: the schema-registry prefix of the request, repeated on the answer
    envelope: Envelope | None = None
    model: str | None = None  # the model the request names in its body (protobuf model_name), for routing

    @property
    def n(self) -> int:
        return int(self.instances.shape[0])


def header(record: RawRecord, name: str) -> bytes | None:
    """A header's value by lower-case name, matched case-insensitively (HTTP habits carry over to Kafka);
    None if absent or null."""
    return record.header_map.get(name)


def header_text(record: RawRecord, name: str) -> str | None:
    raw = header(record, name)
    return raw.decode("utf-8", "replace") if raw is not None else None


def fallback_id(record: RawRecord) -> str:
    """request-id, x-request-id or ce_id header, else the key, else topic-partition-offset (stable across
    redelivery). Bytes that are not UTF-8 are shown as hex."""
    for raw in (header(record, "request-id"), header(record, "x-request-id"), header(record, "ce_id"), record.key):
        if raw:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw.hex()
    return f"{record.topic}-{record.partition}-{record.offset}"


def parse_json(value: bytes, source: str) -> Any:
    """JSON, or a DecodeError("decode") that says what was being read."""
    try:
        return json_text.loads(value)
    except RecursionError:
        raise DecodeError("decode", f"{source} JSON nested too deeply") from None
    except ValueError as exc:
        raise DecodeError("decode", f"{source} is not JSON: {str(exc)[:200]}") from None


# Every answer names the detector and version that gave it in these headers (and as model_name /
# model_version in its body where the family has them), so the feedback join rebuilt after a restart
# knows them too, whatever the family.
MODEL_NAME_HEADER, MODEL_VERSION_HEADER = "adae-model-name", "adae-model-version"
PREDICTION_HEADER = "adae-prediction"  # which prediction the answer's `prediction` field carries

# Where a record of ours came from: on dead letters and flagged captures.
SOURCE_HEADERS = ("source-topic", "source-partition", "source-offset")


def source_headers(record: RawRecord) -> list[tuple[str, bytes]]:
    return [
        ("source-topic", record.topic.encode("utf-8", "replace")),
        ("source-partition", str(record.partition).encode()),
        ("source-offset", str(record.offset).encode()),
    ]


def echoed_headers(record: RawRecord) -> list[tuple[str, bytes]]:
    """The request's correlation headers, for the answer: x-*, pipeline and trace context."""
    return [
        (k, v) for k, v in record.headers or () if v is not None and (k.lower().startswith("x-") or k.lower() in ECHOED)
    ]
