"""How big a record is for the broker, and which send failures are the record's own.

The sink checks every answer, capture and dead letter against the smaller of the configured limit and
the topic's own ``max.message.bytes`` before sending, and tells a rejection of one record (its size or
content: dead-lettered, the service goes on) from a failure of the service. Pure functions, no client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from adae_stream.clients import (
    CorruptRecordError,
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from adae_stream.clients.build import dead_letter_limit
from adae_stream.codecs.records import SOURCE_HEADERS, RawRecord, source_headers
from adae_stream.config import KafkaConfig

log = logging.getLogger(__name__)

# Errors that condemn one record, not the service: the record's size or content.
RECORD_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, CorruptRecordError, InvalidRecordError)
BATCH_OVERHEAD = 61  # v2 record batch header
RECORD_OVERHEAD = 21  # length, attributes, timestamp and offset deltas, key and value lengths (varints)
HEADER_OVERHEAD = 10  # two varint lengths
MAX_ERROR_MESSAGE = 4000  # bytes of the `error-message` header


def is_record_error(exc: BaseException) -> bool:
    """Whether a send failure belongs to the record: its size, or content the client cannot serialise
    (TypeError: a header kafka-python refuses; UnicodeError: text no UTF-8 can carry). kafka-python's other
    ValueErrors name the topic (an illegal name): a failure of the service."""
    if isinstance(exc, RECORD_ERRORS):
        return True
    return isinstance(exc, (TypeError, UnicodeError)) and not isinstance(exc, KafkaError)


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> int:
    """An upper bound of the record's size alone in a v2 batch: what a topic's max.message.bytes limits."""
    size = BATCH_OVERHEAD + RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    return size + sum(HEADER_OVERHEAD + len(k.encode("utf-8", "surrogatepass")) + len(v) for k, v in headers)


def clean_headers(headers: Sequence[tuple[Any, Any]] | None) -> list[tuple[str, bytes]]:
    """The input's headers made valid for a new record: kafka-python hands a null value over as None, which
    send() refuses. Our own error and source headers are dropped so that they are not doubled."""
    out = []
    for key, value in headers or ():
        if not isinstance(key, str) or key.startswith("error-") or key in SOURCE_HEADERS:
            continue
        out.append((key, bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else b""))
    return out


def smaller_limit(configured: int, broker: dict[str, int], topic: str | None) -> int:
    """The config's limit, or the topic's own max.message.bytes where the broker has a smaller one."""
    limit = broker.get(topic, configured) if topic is not None else configured
    if limit < configured:
        log.warning(
            "topic %s allows %d bytes (max.message.bytes), less than the %d configured: larger records "
            "are dead-lettered before they are sent",
            topic,
            limit,
            configured,
        )
    return min(configured, limit)


def dead_letter_record(
    rec: RawRecord, reason: str, message: str, limit: int, minimal: bool = False
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """The original record with error headers, cut to fit the dead-letter topic: the value is
    truncated first, then the copied headers go, then the key (a minimal record)."""
    error = [
        ("error-reason", reason.encode()),
        ("error-message", message.encode("utf-8", "replace")[:MAX_ERROR_MESSAGE]),
        *source_headers(rec),
    ]
    if minimal:
        key = rec.key if record_size(rec.key, b"", error) <= limit else None
        return key, b"", [*error, ("error-minimal", b"true")]
    value = rec.value or b""
    copied = clean_headers(rec.headers)
    marks = [("error-truncated-from", str(len(value)).encode())]
    if record_size(rec.key, b"", copied + error + marks) > limit:
        marks.append(("error-headers-dropped", str(len(copied)).encode()))
        copied = []
    room = limit - record_size(rec.key, b"", copied + error + marks)
    if room < 0:
        return dead_letter_record(rec, reason, message, limit, minimal=True)
    if len(value) <= room:
        marks = marks[1:]
    return rec.key, value[:room], copied + error + marks


def write_limits(kafka: KafkaConfig, broker: dict[str, int]) -> tuple[int, dict[str, int], int]:
    """The largest record the service may write as an answer, as a copy (per copy topic) and as a dead
    letter: each the smaller of the config's limit and the broker's max.message.bytes for its topic."""
    copies = {
        topic: smaller_limit(kafka.max_message_bytes, broker, topic)
        for topic in (kafka.flagged_topic, kafka.shadow_topic)
        if topic is not None
    }
    answer = smaller_limit(kafka.max_message_bytes, broker, kafka.output_topic)
    return answer, copies, smaller_limit(dead_letter_limit(kafka), broker, kafka.dead_letter_topic)
