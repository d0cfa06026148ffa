"""How big a record is for the broker, and which send failures are the record's own.

The sink checks every answer, capture and dead letter against the smaller of the configured limit and
the topic's own ``max.message.bytes`` before sending, and tells a rejection of one record (its size or
content: dead-lettered, the service goes on) from a failure of the service. Pure functions, no client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from adae_stream.stream.codecs.records import SOURCE_HEADERS

log = logging.getLogger(__name__)

# Errors that condemn one record, not the service: the record's size or content.
RECORD_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, CorruptRecordError, InvalidRecordError)
BATCH_OVERHEAD = 61  # v2 record batch header
RECORD_OVERHEAD = 21  # length, attributes, timestamp and offset deltas, key and value lengths (varints)
HEADER_OVERHEAD = 10  # two varint lengths


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
