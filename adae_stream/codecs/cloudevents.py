"""CloudEvents around a request (KServe's payload logger through Knative's Kafka broker or KafkaSink).

Binary mode: the value is the data, ``content-type`` is datacontenttype, every other attribute is a
``ce_<name>`` header. Structured mode: ``content-type: application/cloudevents+json`` and the value is
the JSON event, with ``data`` (JSON) or ``data_base64``. KServe's request and response events share one
``id``; response events are not requests and are skipped. The answer is a CloudEvent in the same mode,
with the same id, a type of our own, and the source event's extensions.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from typing import Any

from adae_stream.codecs import json_text
from adae_stream.codecs.records import CLOUDEVENTS_JSON, Envelope, RawRecord, header_text, parse_json
from adae_stream.errors import DecodeError, NotARequest

CE_PREFIX = "ce_"
ANSWER_TYPE = "io.adae-stream.inference.response"
# Attributes the answer sets itself; every other attribute of the request's event is an extension, kept.
OWN_ATTRIBUTES = frozenset(
    {"specversion", "id", "type", "source", "time", "datacontenttype", "dataschema", "subject", "data", "data_base64"}
)
RESPONSE_TYPES = (".response",)  # org.kubeflow.serving.inference.response, io.seldon.serving.inference.response


def unwrap(record: RawRecord, value: bytes) -> tuple[Envelope | None, bytes]:
    """The envelope, if any, and the data inside it. Response events raise NotARequest."""
    if header_text(record, "ce_specversion") is not None:
        attributes = {
            k[len(CE_PREFIX) :]: (v or b"").decode("utf-8", "replace")
            for k, v in record.headers or ()
            if k.lower().startswith(CE_PREFIX)
        }
        datacontenttype = header_text(record, "content-type")
        if datacontenttype is not None:
            attributes["datacontenttype"] = datacontenttype
        envelope, data = Envelope("binary", attributes), value
    elif (header_text(record, "content-type") or "").lower().startswith("application/cloudevents"):
        envelope, data = _structured(value)
    else:
        seldon_type = header_text(record, "type")  # Seldon Core v1 executors' un-prefixed request logger headers
        if seldon_type is not None and seldon_type.endswith(RESPONSE_TYPES):
            raise NotARequest("cloudevent_response", f"a logged inference response (type {seldon_type[:100]})")
        return None, value
    event_type = str(envelope.attributes.get("type", ""))
    if event_type.endswith(RESPONSE_TYPES):
        raise NotARequest("cloudevent_response", f"a CloudEvent of type {event_type[:100]}, not a request")
    if not envelope.attributes.get("id"):
        raise DecodeError("schema", "CloudEvent without an id")
    return envelope, data


def _structured(value: bytes) -> tuple[Envelope, bytes]:
    event = parse_json(value, "structured CloudEvent")
    if not isinstance(event, dict):
        raise DecodeError("schema", "a structured CloudEvent must be a JSON object")
    if "data_base64" in event:
        try:
            data = base64.b64decode(event["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise DecodeError("decode", f"CloudEvent data_base64 is not base64: {exc}") from None
    elif isinstance(event.get("data"), (dict, list)):
        data = json.dumps(event["data"]).encode()  # the standard library's: it keeps NaN, refused as non_finite
    elif isinstance(event.get("data"), str):
        data = event["data"].encode("utf-8", "surrogatepass")
    else:
        raise DecodeError("schema", "structured CloudEvent without data or data_base64")
    attributes = {k: v for k, v in event.items() if k not in ("data", "data_base64")}
    return Envelope("structured", attributes), data


def wrap(
    envelope: Envelope, answer_id: str, payload: bytes, content_type: str, headers: list[tuple[str, bytes]], source: str
) -> tuple[bytes, str, list[tuple[str, bytes]]]:
    """The answer as a CloudEvent in the request's mode: body, content-type and headers."""
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(envelope.attributes.get("id", answer_id)),
        "type": ANSWER_TYPE,
        "source": source,
        "time": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": content_type,
    }
    attributes.update({k: v for k, v in envelope.attributes.items() if k not in OWN_ATTRIBUTES})
    if envelope.mode == "binary":
        ce = [
            (CE_PREFIX + k, str(v).encode("utf-8", "replace")) for k, v in attributes.items() if k != "datacontenttype"
        ]
        return payload, content_type, headers + ce
    event = dict(attributes)
    if content_type.startswith("application/json"):
        event["data"] = json_text.loads(payload)
    else:
        event["data_base64"] = base64.b64encode(payload).decode("ascii")
    return json_text.dumps(event), CLOUDEVENTS_JSON + "; charset=UTF-8", headers
