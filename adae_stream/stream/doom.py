"""Whether the work in flight is doomed, and which records doomed it.

The broker rejected a record and kafka-python's producer cannot go on with what it holds: under
exactly_once the open transaction can only abort; the idempotent producer of at_least_once goes into a
fatal state (kafka-python 3.0.12 classifies any non-retriable batch error so, where the Java client bumps
the epoch and goes on). The loop settles it (Outlet.redo_after_rejection): the work is redone on a new
producer, and each record condemned here is dead-lettered in its redo instead of sent again.

Which failures are a record's own: kafka-python fails the rest of the work in flight with the very
exception object that doomed it (``TransactionManager.last_error``), while each batch the broker rejects
itself gets an exception of its own. So every record error whose exception was not seen before in this
doomed window is condemned, not only the first: two oversized answers in one window are both
dead-lettered in the one redo (before, the second was sent again, rejected again, and with the process
dying in between, looped: rejected 5 and 4 times, issue 38). Set from the producer's I/O thread, read
and cleared by the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from adae_stream.stream.record_limits import is_record_error

log = logging.getLogger(__name__)


class Doom:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.doomed = False
        self._seen: list[BaseException] = []  # the exceptions of this window (kept by identity)

    def clear(self) -> None:
        with self._lock:
            self.doomed = False
            self._seen = []

    def declare(self, why: str) -> None:
        """Doomed without a record to blame (the producer could not settle what it was sent)."""
        with self._lock:
            self.doomed = True
        log.warning("%s: the work in flight is redone on a new producer", why)

    def settles(self, exc: BaseException, condemn: Callable[[], str] | None) -> bool:
        """True when the failure is settled by the abort-and-redo: a record's own error (``condemn``, under
        the lock, keeps what the record was for and names it; None: a record that cannot be condemned, a
        minimal dead letter), or anything failing in a window already doomed."""
        with self._lock:
            if condemn is None or not is_record_error(exc) or any(exc is seen for seen in self._seen):
                return self.doomed
            self._seen.append(exc)
            self.doomed = True
            what = condemn()
        log.warning("the broker rejected the %s (%r): the work in flight is redone without it", what, exc)
        return True
