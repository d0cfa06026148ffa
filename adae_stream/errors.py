"""The project's exceptions and dead-letter reasons, in one module that imports neither TensorFlow nor Kafka.

Kept apart so that any layer (codecs, the loop, metrics, the CLI) can name and catch them without
pulling in the heavy modules that raise them. Every exception derives from ``AdaeError``, so a caller
embedding the package can catch the project's errors apart from everyone else's; the builtin base each
also has (ValueError, RuntimeError) keeps what callers caught before working.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

# Why a record went to the dead-letter topic (the `error-reason` header and the `reason` label of
# adae_dead_letter_total). The first six come from decoding the request itself.
DECODE_REASONS = ("decode", "schema", "shape", "dtype", "non_finite", "too_large")
DEAD_LETTER_REASONS = (
    *DECODE_REASONS,
    "scoring",  # the detector raised on the batch that held the request
    "encode",  # the answer could not be serialised (e.g. an id that is not valid Unicode)
    "answer_too_large",  # the answer exceeds kafka.max_message_bytes, the output topic's limit
    "rejected",  # the client or broker refused the answer record itself (too large, invalid)
    "internal",  # an unexpected error confined to this record: a bug, reported rather than fatal
)

# Records that are not requests although they share a topic with requests: counted and skipped
# (the `kind` label of adae_skipped_total), neither answered nor dead-lettered.
SKIP_KINDS = (
    "cloudevent_response",  # a KServe (or Seldon Core v1) logged response event
    "seldon_response",  # a record of a Seldon Core v2 `.outputs` topic, or seldon-infer-type *Response
    "json_response",  # an OIP V2 (`outputs`) or V1 (`predictions`) JSON answer
    "unrouted",  # a request for a model no detector of the repository serves (detector.routes)
)


@dataclass(frozen=True)
class PolicyRow:
    """One row of the error policy: a kind of failure, where its record goes, and whether the process stops."""

    failure: str
    destination: str
    reasons: tuple[str, ...] = ()  # the dead-letter reasons the row uses (`error-reason`, a metric label)
    stops: bool = False

    def markdown(self) -> str:
        return f"| {self.failure} | {self.destination} | {'yes, exit 1' if self.stops else 'no'} |"


# The error policy (README, "Error policy", whose table is rendered from this one and checked against it
# by tests/fast/test_codebase.py). Every dead-letter reason belongs to a row.
ERROR_POLICY = (
    PolicyRow("the record cannot be decoded or validated", "dead-letter topic, its reason", DECODE_REASONS),
    PolicyRow("scoring its batch raised", "dead-letter topic, `scoring` (each request of the batch)", ("scoring",)),
    PolicyRow(
        "its answer cannot be encoded, or is over the output topic's limit",
        "dead-letter topic, `encode` / `answer_too_large`",
        ("encode", "answer_too_large"),
    ),
    PolicyRow(
        "the client or broker rejects its answer (too large, invalid record)",
        "dead-letter topic, `rejected`",
        ("rejected",),
    ),
    PolicyRow(
        "decoding it raised unexpectedly (a bug, confined to the record)",
        "dead-letter topic, `internal`",
        ("internal",),
    ),
    PolicyRow(
        "the dead-letter topic rejects the record for a reason of its own",
        "a minimal dead-letter record (coordinates only)",
    ),
    PolicyRow("the minimal dead-letter record is rejected too", "nowhere: offset not committed", stops=True),
    PolicyRow(
        "broker unreachable past `kafka.delivery_timeout_s` / `connect_timeout_s`",
        "nowhere: offset not committed",
        stops=True,
    ),
    PolicyRow(
        "authentication or authorization refused, producer fenced, broker lost the producer's state",
        "nowhere: offset not committed",
        stops=True,
    ),
    PolicyRow(
        "the output or dead-letter topic cannot be written (missing, invalid)",
        "nowhere: offset not committed",
        stops=True,
    ),
    PolicyRow(
        "a flagged capture cannot be encoded, or is refused",
        'the answer goes out; the capture is counted (`adae_flagged_captured_total{result="rejected"}`)',
    ),
    PolicyRow(
        "committing before a revocation fails",
        "nowhere: the partitions' new owner redoes what was not committed",
    ),
    PolicyRow(
        "records sent are not settled by `kafka.delivery_timeout_s` (kafka-python's flush failing on a split batch)",
        "the work since the last commit is redone on a new producer; nothing is committed past it",
    ),
    PolicyRow(
        "a transaction's offsets are refused (a stalled member's generation moved on)",
        "transaction aborted; the records are redone by their owner after the rejoin",
    ),
    PolicyRow("a transaction fails otherwise", "transaction aborted; nowhere: offset not committed", stops=True),
    PolicyRow(
        "a detector version fails to load",
        "no record is affected: the version serving goes on (`adae_detector_load_failures_total`)",
    ),
)


def error_policy_table() -> str:
    """The README's table."""
    head = "| failure | where the record goes | does the process stop? |\n|---|---|---|"
    return "\n".join([head, *(row.markdown() for row in ERROR_POLICY)])


class FirstFailure:
    """Why the service stops with exit 1 (the rows above that say so): the first fatal failure, whichever
    thread met it (the producer's I/O thread for a send, the loop for a commit or a drain). One record
    for the whole service, so the loop stops on it, logs it once ("pipeline stopped: ...") and reports it
    on /ready; failures after the first are consequences, logged at DEBUG."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._message: str | None = None

    def record(self, message: str) -> None:
        with self._lock:
            first = self._message is None
            if first:
                self._message = message
        if not first:
            logging.getLogger("adae_stream.stream").debug("also failed: %s", message)

    @property
    def message(self) -> str | None:
        return self._message


class AdaeError(Exception):
    """Base of every exception adae-stream raises on purpose."""


class _ClassifiedRecord(AdaeError):
    """A verdict on one record: a label from a closed set (a metric label value) and a one-line message."""

    labels: tuple[str, ...] = ()

    def __init__(self, label: str, message: str) -> None:
        if label not in self.labels:
            raise ValueError(f"unknown {type(self).__name__} label {label!r}; expected one of {self.labels}")
        super().__init__(f"{label}: {message}")
        self.label = label
        self.message = message


class DecodeError(_ClassifiedRecord):
    """A record that is not a request the detector can score; `reason` is one of DECODE_REASONS."""

    labels = DECODE_REASONS

    @property
    def reason(self) -> str:
        return self.label


class NotARequest(_ClassifiedRecord):
    """An inference response, not a request; `kind` is one of SKIP_KINDS."""

    labels = SKIP_KINDS

    @property
    def kind(self) -> str:
        return self.label


class UnreadableAnswer(AdaeError, ValueError):
    """A record of the output topic that is not an answer of any family decode_response reads: another
    writer's record, or a corrupt one. Readers of the topic (the feedback join's tail, ``adae-stream tail``,
    the demo) skip it and say so; it never stops them."""


class PipelineError(AdaeError, RuntimeError):
    """A failure of the whole service (broker unreachable past the deadline, authorization, a fenced
    producer, the dead-letter topic unusable): the pipeline stops with exit 1 and commits nothing past
    unpublished work."""


class ConfigError(AdaeError, ValueError):
    """Invalid configuration; the message is one line naming the key."""


class BrokerError(AdaeError, RuntimeError):
    """The embedded broker could not be found or started."""


class DetectorLoadError(AdaeError, RuntimeError):
    """A saved detector could not be loaded (missing or corrupt file, unsupported version)."""


class ThresholdNotSetError(AdaeError, ValueError):
    """predict/correct were called before a threshold was given or inferred."""


class CalibrationError(AdaeError, ValueError):
    """The held-out set cannot support the rate asked for."""


# What `adae-stream run` turns into one line on stderr and exit status 2 (or 1 for PipelineError, which
# the pipeline reports itself) instead of a traceback: the operator's to fix, not a bug.
STARTUP_ERRORS: tuple[type[AdaeError], ...] = (ConfigError, BrokerError, DetectorLoadError, ThresholdNotSetError)
