"""The sends not settled yet, each by its own future: what the sink's flush waits for.

kafka-python's own ``flush()`` is not enough to know that every record sent is acked or failed. For a batch
the broker finds too large it splits the batch, rebinds the records' futures to the halves, and leaves the
old batch's future unfinished; its flush() waits on that one, then raises ``UnknownError('Future not
done')`` or times out. Called from the commit, that killed the process (issue 38: 3 of 3 tries with two
oversized answers 0.6 s apart). The records' own futures do settle, so those are what is waited for.
"""

from __future__ import annotations

import threading
import time

from adae_stream.clients import RecordFuture

SETTLE_POLL_S = 0.002  # how often the wait looks again, once kafka-python's flush has returned


class InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: set[RecordFuture] = set()

    def track(self, future: RecordFuture) -> None:
        """Until it is settled. Call it after the send's own callbacks are added (they run in order), so a
        record counts as settled only once they have run."""
        with self._lock:
            self._futures.add(future)
        future.add_both(self._settled, future)

    def _settled(self, future: RecordFuture, _result: object) -> None:
        with self._lock:
            self._futures.discard(future)

    def __len__(self) -> int:
        with self._lock:
            return len(self._futures)

    def wait(self, deadline: float) -> bool:
        """Whether all are settled by ``deadline`` (time.monotonic)."""
        while len(self) and time.monotonic() < deadline:
            time.sleep(SETTLE_POLL_S)
        return not len(self)

    def forget(self) -> None:
        """The producer they were sent with is gone (replaced after a rejection): they never settle."""
        with self._lock:
            self._futures = set()
