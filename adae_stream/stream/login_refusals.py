"""Refused logins, told apart from an unreachable broker.

kafka-python 3.0.12 treats a SASL login the broker refuses (a wrong password, an unknown user) like a
broker that is not there: it logs ``Bootstrap connection to ... failed: SaslAuthenticationFailedError``
at WARNING from ``kafka.net.manager``, retries, and raises only ``KafkaTimeoutError('Unable to bootstrap')`` once its
bootstrap timeout passes (measured against Apache Kafka 4.1 with SCRAM-SHA-512). Retrying cannot fix
credentials, so the session watches that logger for the refusal and stops at once with a line that says
what was refused, instead of reporting a broker unreachable for kafka.connect_timeout_s.
"""

from __future__ import annotations

import logging
import threading

from adae_stream.clients import AuthorizationError, SaslAuthenticationFailedError

KAFKA_CONNECTIONS_LOGGER = "kafka.net.manager"


class LoginRefusals(logging.Filter):
    """Remembers the last refusal logged by kafka-python's connection manager. The logger is opened to
    WARNING while watched; records below the level the operator had set are still dropped."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._last: BaseException | None = None
        self._shown = logging.NOTSET
        self._level = logging.NOTSET

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            if isinstance(arg, (SaslAuthenticationFailedError, AuthorizationError)):
                with self._lock:
                    self._last = arg
        return record.levelno >= self._shown

    def take(self) -> BaseException | None:
        """The refusal seen since the last call, if any."""
        with self._lock:
            last, self._last = self._last, None
        return last

    def __enter__(self) -> LoginRefusals:
        logger = logging.getLogger(KAFKA_CONNECTIONS_LOGGER)
        self._shown, self._level = logger.getEffectiveLevel(), logger.level
        logger.addFilter(self)
        logger.setLevel(min(self._shown, logging.WARNING))  # a filter sees only records at enabled levels
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger(KAFKA_CONNECTIONS_LOGGER)
        logger.removeFilter(self)
        logger.setLevel(self._level)
