"""The project's exceptions and dead-letter reasons, in one module that imports neither TensorFlow nor Kafka.

Kept apart so that any layer (codecs, the loop, metrics, the CLI) can name them without pulling in
the heavy modules that raise them.
"""
from __future__ import annotations

# Why a record went to the dead-letter topic (the `error-reason` header and the `reason` label of
# adae_dead_letter_total). The first six come from decoding the request itself.
DECODE_REASONS = ("decode", "schema", "shape", "dtype", "non_finite", "too_large")
DEAD_LETTER_REASONS = DECODE_REASONS + (
    "scoring",  # the detector raised on the batch that held the request
    "encode",  # the answer could not be serialised (e.g. an id that is not valid Unicode)
    "answer_too_large",  # the answer exceeds kafka.max_message_bytes, the output topic's limit
    "rejected",  # the client or broker refused the answer record itself (too large, invalid)
    "internal",  # an unexpected error confined to this record: a bug, reported rather than fatal
)


class DecodeError(Exception):
    """A record that is not a request the detector can score; `reason` is one of DECODE_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in DECODE_REASONS:
            raise ValueError(f"unknown decode reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class PipelineError(RuntimeError):
    """A failure of the whole service (broker unreachable past the deadline, authorization, a fenced
    producer, the dead-letter topic unusable): the pipeline stops with exit 1 and commits nothing past
    unpublished work."""


# Records that are not requests although they share a topic with requests: counted and skipped
# (the `kind` label of adae_skipped_total), neither answered nor dead-lettered.
SKIP_KINDS = (
    "cloudevent_response",  # a KServe (or Seldon Core v1) logged response event
    "seldon_response",  # a record of a Seldon Core v2 `.outputs` topic, or seldon-infer-type *Response
    "json_response",  # an OIP V2 (`outputs`) or V1 (`predictions`) JSON answer
)


class NotARequest(Exception):
    """An inference response, not a request; `kind` is one of SKIP_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in SKIP_KINDS:
            raise ValueError(f"unknown skip kind {kind!r}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
