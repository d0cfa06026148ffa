"""Wire formats: decode a Kafka record into a Request, encode the answer in the request's own family.

Families, registered in FAMILIES (each a module with the names of family.WireFamily) and recognised
from headers and body with no configuration:
- Open Inference Protocol V2 JSON, with Triton's binary tensor extension, and V1 JSON (oip_json.py);
- OIP protobuf ``ModelInferRequest``, bare or in schema-registry framing (Seldon Core v2; oip_proto.py);
- .npy arrays (npy.py);
- any of these inside a CloudEvent, binary or structured (KServe's payload logger; cloudevents.py).

Responses that share a topic with requests (KServe response events, Seldon ``.outputs`` records, OIP
or V1 JSON answers) raise NotARequest: they are counted and skipped, neither answered nor dead-lettered.
Every other rejection is a DecodeError with a reason from DECODE_REASONS, so bad input lands on the
dead-letter topic with a machine-readable cause.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from adae_stream.codecs import cloudevents, json_text, npy, oip_json, oip_proto
from adae_stream.codecs.family import Headers, Info, Result, WireFamily
from adae_stream.codecs.records import (
    CLOUDEVENTS_JSON,
    MODEL_NAME_HEADER,
    MODEL_VERSION_HEADER,
    OCTET_STREAM,
    PREDICTION_HEADER,
    Envelope,
    RawRecord,
    Request,
    echoed_headers,
    fallback_id,
    header,
    header_text,
    source_headers,
)
from adae_stream.codecs.tensors import INSTANCE_INDEX, RESULT_DTYPES
from adae_stream.errors import DecodeError, NotARequest, UnreadableAnswer

__all__ = [
    "FAMILIES",
    "INSTANCE_INDEX",
    "REQUEST_FORMATS",
    "RESULT_DTYPES",
    "Codecs",
    "Envelope",
    "RawRecord",
    "Request",
    "decode",
    "decode_response",
    "encode",
    "encode_flagged",
    "encode_request",
    "header",
]

SNIFFED_TYPES = frozenset({"", OCTET_STREAM})  # no content-type, or one that says nothing about the body
SELDON_OUTPUTS = re.compile(r"\.(model|pipeline)\.[^.]+\.outputs$")  # <prefix>.<ns>.model.<name>.outputs
SELDON_TYPE = "seldon-infer-type"


class Codecs:
    """Every codec operation over a registry of wire families, in sniffing order. The platform rules
    that hold for any family live here: what is not a request (Seldon's outputs, response events), the
    CloudEvent around a body, the headers every answer carries."""

    def __init__(self, families: Sequence[WireFamily]) -> None:
        self.families = tuple(families)
        self._by_content_type = _index(self.families, "CONTENT_TYPES")
        self._by_answer = _index(self.families, "ANSWERS")
        self._by_request_format = _index(self.families, "REQUEST_FORMATS")
        self.request_formats = tuple(self._by_request_format)
        # (what seldon-infer-type starts with on a request of the family, "json/"; the family)
        self._seldon = [
            (f.SELDON_ANSWER_TYPE.partition("/")[0] + "/", f) for f in self.families if f.SELDON_ANSWER_TYPE
        ]

    def decode(self, record: RawRecord, input_shape: tuple[int, ...] | None, max_bytes: int) -> Request:
        """input_shape None: decode whatever shape the record declares; the loop routes the request to its
        detector and checks it against that detector's input there (tensors.conform)."""
        value = record.value
        if not value:
            raise DecodeError("decode", "empty record body")
        if len(value) > max_bytes:
            raise DecodeError("too_large", f"record is {len(value)} bytes, over max_message_bytes={max_bytes}")
        if SELDON_OUTPUTS.search(record.topic):
            raise NotARequest("seldon_response", f"a record of Seldon's outputs topic {record.topic}")
        seldon = (header_text(record, SELDON_TYPE) or "").lower()
        if seldon.endswith("response"):
            raise NotARequest("seldon_response", f"{SELDON_TYPE} {seldon[:60]}")
        envelope, data = cloudevents.unwrap(record, value)
        if not data:
            raise DecodeError("decode", "empty CloudEvent data")
        family = self._named(_content_type(record), envelope is not None, seldon)
        request = (
            family.decode(record, data, input_shape, max_bytes)
            if family is not None
            else self._decode_sniffed(record, data, input_shape, max_bytes)
        )
        if envelope is not None:
            request.envelope = envelope
            if request.id == fallback_id(record):  # no id in the body: the event's id correlates
                request.id = str(envelope.attributes["id"])
        return request

    def _named(self, ctype: str, enveloped: bool, seldon: str) -> WireFamily | None:
        """The family the headers name, or None where they say nothing and the body must tell. A
        content-type is trusted unless it came with a CloudEvent (KServe logs the caller's, which may be
        wrong) or says nothing (absent, octet-stream); Seldon's own header is trusted over it."""
        if seldon:
            for prefix, family in self._seldon:
                if seldon.startswith(prefix):
                    return family
        if enveloped or ctype in SNIFFED_TYPES:
            return None
        named = self._by_content_type.get(ctype)
        if named is None:
            raise DecodeError(
                "decode", f"unsupported content-type {ctype[:100]!r} (expected one of {self._content_types()})"
            )
        return named

    def _decode_sniffed(
        self, record: RawRecord, data: bytes, input_shape: tuple[int, ...] | None, max_bytes: int
    ) -> Request:
        """Each family whose sniff says yes, in registry order, the next only while the previous found the
        body unreadable ("decode"): a protobuf can start with bytes that read as whitespace and a brace."""
        unreadable: DecodeError | None = None
        for family in self.families:
            if family.sniff(record, data):
                try:
                    return family.decode(record, data, input_shape, max_bytes)
                except DecodeError as exc:
                    if exc.reason != "decode":
                        raise
                    unreadable = exc
        raise unreadable or self._no_family(record)

    def _no_family(self, record: RawRecord) -> DecodeError:
        ctype = header_text(record, "content-type")
        shown = f" (content-type {ctype[:100]!r})" if ctype else ""
        return DecodeError(
            "decode", f"the body is of no known family ({', '.join(f.NAME for f in self.families)}){shown}"
        )

    def _content_types(self) -> str:
        return ", ".join(sorted(self._by_content_type))

    def encode(self, request: Request, result: Result, info: Info) -> tuple[bytes, Headers]:
        """Body and headers of the answer, in the request's family (and envelope); ``result`` holds the fields
        to publish, in RESULT_DTYPES order. ``info`` carries model_name, model_version (the repository
        version) and ANSWER_PARAMETERS."""
        family = self._by_answer[request.fmt]
        payload, ctype, extra = family.encode(request, result, info)
        headers = [
            *_request_headers(request, info),
            ("adae-detector-id", info["detector_id"].encode()),
            (PREDICTION_HEADER, info["prediction"].encode()),
            (MODEL_NAME_HEADER, info["model_name"].encode()),
            (MODEL_VERSION_HEADER, info["model_version"].encode()),
            *extra,
            *echoed_headers(request.record),
        ]
        if family.SELDON_ANSWER_TYPE and header(request.record, SELDON_TYPE) is not None:
            headers.append((SELDON_TYPE, family.SELDON_ANSWER_TYPE.encode()))
        if request.envelope is not None:
            payload, ctype, headers = cloudevents.wrap(
                request.envelope, request.id, payload, ctype, headers, source=f"/adae-stream/{info['model_name']}"
            )
        return payload, [("content-type", ctype.encode()), *headers]

    def encode_flagged(
        self, request: Request, instances: np.ndarray, result: Result, info: Info
    ) -> tuple[bytes, Headers]:
        """A flagged-sample record, for review and relabelling: the flagged instances' input data (an `input`
        tensor) with their positions, scores, flags and predictions, and the request's id and coordinates,
        in the request's family."""
        x = np.ascontiguousarray(instances, dtype="<f4")
        payload, ctype = self._by_answer[request.fmt].encode_flagged(request, x, result, info)
        rec = request.record
        return payload, [
            ("content-type", ctype.encode()),
            *_request_headers(request, info),
            *source_headers(rec),
            *echoed_headers(rec),
        ]

    def encode_request(
        self, x: np.ndarray, fmt: str, request_id: str, input_name: str = "input-0"
    ) -> tuple[bytes, Headers]:
        """A request record for ``x`` (n, ...) in one of request_formats: what producers send to the input topic."""
        family = self._by_request_format.get(fmt)
        if family is None:
            raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(self.request_formats)}")
        payload, ctype, extra = family.encode_request(np.asarray(x, dtype=np.float32), fmt, request_id, input_name)
        return payload, [("content-type", ctype.encode()), ("request-id", request_id.encode()), *extra]

    def decode_response(
        self, value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None
    ) -> dict[str, Any]:
        """Parse an answer from the output topic into {'id', field: np.ndarray, ...} whatever its family.

        Raises UnreadableAnswer, and only that, for any record it cannot read: the output topic is shared
        ground (other writers, corrupt records), and its readers must be able to skip what is not ours
        with one except clause (tests/fast/test_codec_properties.py holds this for arbitrary bytes and headers)."""
        try:
            answer = self._decode_response(value, headers or ())
            if not isinstance(answer.get("id"), str):
                raise TypeError(f"the answer's id is {type(answer.get('id')).__name__}, not a string")
            return answer
        except UnreadableAnswer:
            raise
        except Exception as exc:  # JSON, base64, protobuf, numpy and missing keys each raise their own
            raise UnreadableAnswer(f"not an answer: {type(exc).__name__}: {exc}"[:300]) from exc

    def _decode_response(self, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> dict[str, Any]:
        if value is None:
            raise UnreadableAnswer("not an answer: a record without a value (a tombstone)")
        record = RawRecord("", 0, 0, None, value, headers)
        ctype = _content_type(record)
        if ctype == CLOUDEVENTS_JSON:
            event = json_text.loads(value)
            inner = json.dumps(event["data"]).encode() if "data" in event else base64.b64decode(event["data_base64"])
            others = [(k, v) for k, v in headers if k.lower() != "content-type"]
            out = self._decode_response(inner, [("content-type", event["datacontenttype"].encode()), *others])
            out["cloudevent"] = {k: v for k, v in event.items() if k not in ("data", "data_base64")}
            return out
        family = self._named(ctype, False, "") or next((f for f in self.families if f.sniff(record, value)), None)
        if family is None:
            raise self._no_family(record)
        return family.decode_response(value, {k: v or b"" for k, v in record.header_map.items()})


def _index(families: tuple[WireFamily, ...], names: str) -> dict[str, WireFamily]:
    """Family by one of its names; two families claiming one name would make the registry's order decide."""
    out: dict[str, WireFamily] = {}
    for family in families:
        for name in getattr(family, names):
            if name in out:
                raise ValueError(f"wire families {out[name].NAME} and {family.NAME} both claim {names} {name!r}")
            out[name] = family
    return out


def _content_type(record: RawRecord) -> str:
    """The media type of the content-type header, without parameters, lower-cased; "" if absent."""
    return (header_text(record, "content-type") or "").split(";")[0].strip().lower()


def _request_headers(request: Request, info: Info) -> Headers:
    """What every record about a request carries, an answer or a flagged capture: its id and the threshold."""
    return [("request-id", request.id.encode()), ("adae-threshold", repr(info["threshold"]).encode())]


# The registry: one line a family, in sniffing order (.npy's magic first; JSON before protobuf, whose
# first bytes can read as whitespace and a brace).
FAMILIES: tuple[WireFamily, ...] = (npy, oip_json, oip_proto)

CODECS = Codecs(FAMILIES)
decode = CODECS.decode
encode = CODECS.encode
encode_flagged = CODECS.encode_flagged
encode_request = CODECS.encode_request
decode_response = CODECS.decode_response
REQUEST_FORMATS = CODECS.request_formats
