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
dying in between, looped: rejected 5 and 4 times, issue 38).

A condemned record stays condemned until a commit covers its offset, not only for its next redo: its dead
letter goes out in the redo's transaction, and when that one is aborted too (the next rejection in the
window), the record comes back; sent as an answer again, it was rejected again, once per window, and the
records behind it with it. Set from the producer's I/O thread, read and cleared by the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from adae_stream.stream.record_limits import is_record_error

log = logging.getLogger(__name__)


class Doom:
    def __init__(self) -> None:
        self._lock = threading.RLock()  # settles() runs the caller's condemn() under it, which condemns here
        self.doomed = False
        self.unsettled = False  # declared because sends did not settle: waiting for them again is no use
        self._seen: list[BaseException] = []  # the exceptions of this window (kept by identity)
        # source records (topic, partition, offset) whose own send was rejected: what it was for, and why
        self._condemned: dict[tuple[str, int, int], tuple[Any, BaseException]] = {}
        self._uncopyable: set[tuple[str, str, int, int]] = set()  # (copy topic, source coordinates)

    def clear(self) -> None:
        with self._lock:
            self.doomed = self.unsettled = False
            self._seen = []

    def declare(self, why: str) -> None:
        """Doomed without a record to blame (the producer could not settle what it was sent)."""
        with self._lock:
            self.doomed = self.unsettled = True
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

    def condemn(self, source: tuple[str, int, int], what: Any, exc: BaseException) -> None:
        """``what`` the source record's rejected send was for (an answer, evidence, a dead letter)."""
        with self._lock:
            self._condemned[source] = (what, exc)

    def condemned(self, source: tuple[str, int, int]) -> tuple[Any, BaseException] | None:
        with self._lock:
            return self._condemned.get(source)

    def condemn_copy(self, topic: str, source: tuple[str, int, int]) -> None:
        with self._lock:
            self._uncopyable.add((topic, *source))

    def uncopyable(self, topic: str, source: tuple[str, int, int]) -> bool:
        with self._lock:
            return (topic, *source) in self._uncopyable

    def forget_committed(self, offsets: Mapping[Hashable, int]) -> None:
        """Committed offsets: what they cover will not be read again, so it needs no condemning."""
        committed: dict[tuple, int] = {tuple(tp): offset for tp, offset in offsets.items()}  # type: ignore[arg-type]

        def covered(topic: str, partition: int, offset: int) -> bool:
            return offset < committed.get((topic, partition), -1)

        with self._lock:
            self._condemned = {k: v for k, v in self._condemned.items() if not covered(*k)}
            self._uncopyable = {k for k in self._uncopyable if not covered(*k[1:])}
