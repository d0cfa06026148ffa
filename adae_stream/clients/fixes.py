"""Fixes for two kafka-python 3.0.12 bugs, each found on a real broker and tested there.

1. A group-join race that left the consumer with no partitions, for good (``keep_pending_join_visible``).
2. Refused transactional offsets sent again in the next transaction (``forget_refused_txn_offsets``).

The race: when the group leader's partition count for a topic changes (partitions added, or a topic
re-created with more of them, as a memory-only broker does on restart), ``need_rejoin()`` is True only
because the assignment snapshot and the metadata snapshot differ. The join then runs as a task across
several ``poll()`` calls (each waits at most its own timeout for it). The leader brings the snapshots
level while it computes the assignment, inside that task. A ``poll()`` that starts in the few
milliseconds between then and the task's end sees ``need_rejoin()`` False and skips the group
entirely. From then on nothing awaits the finished join, so ``on_partitions_assigned`` never runs: no
partitions, no fetches and no error, while the member keeps its place in the group. The upstream
diagnostic PR dpkp/kafka-python#2855 describes the symptom ("the consumer spins without an
assignment"). Our loop polls every few milliseconds, so it meets the race often (how often, with and
without the fix: benchmarks/RESULTS.md, "Reliability: kafka-python group-join race").

The Java client avoids it with ``rejoinNeededOrPending()``: a join that has started and has not been
consumed counts as pending. We give the coordinator that predicate: a join task not yet consumed, or a
rebalance whose revocation ran (``rejoining``) and whose assignment has not arrived, keeps the member
joining. A join found finished but unconsumed is then redone (kafka-python replaces a finished join
task), which costs one more JoinGroup round and then completes normally.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import __version__ as KAFKA_PYTHON_VERSION

log = logging.getLogger(__name__)


def keep_pending_join_visible(consumer: Any) -> bool:
    """Make the consumer's coordinator count an unconsumed join as 'rejoin needed'. Returns whether it applied.

    This reaches into kafka-python's private coordinator on purpose: the race is inside it and no public
    API affects it. A version without these internals is left as it is, with a warning.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    plain = getattr(coordinator, "need_rejoin", None)
    if (
        coordinator is None
        or plain is None
        or not hasattr(coordinator, "_join_task")
        or not hasattr(coordinator, "rejoining")
    ):
        log.warning(
            "kafka-python %s: consumer coordinator internals differ from 3.0.x; group-join race fix not applied",
            KAFKA_PYTHON_VERSION,
        )
        return False

    def need_rejoin_or_pending() -> bool:
        return plain() or coordinator._join_task is not None or coordinator.rejoining

    coordinator.need_rejoin = need_rejoin_or_pending
    return True


def forget_refused_txn_offsets(producer: Any) -> bool:
    """Drop a transaction's pending offsets when it ends. Returns whether it applied.

    kafka-python keeps the offsets of ``send_offsets_to_transaction`` in a dict until the coordinator
    accepts each partition. When it refuses them all (KIP-447: IllegalGeneration, UnknownMemberId, a
    zombie's stale group membership), the transaction is aborted but the dict is never cleared, and the
    next transaction's TxnOffsetCommit sends the old offsets again beside the new ones, now under a valid
    generation. A resumed zombie that had rejoined with other partitions so moved a partition it no
    longer owned back to where it stood before it was stopped, and its new owner redid requests already
    answered and committed (test_exactly_once's zombie case; how often: benchmarks/RESULTS.md,
    "Reliability: refused transactional offsets sent again"). The Java client clears its
    ``pendingTxnOffsetCommits`` when the offset request fails; here they are cleared whenever a
    transaction completes, committed or aborted, after which none can be pending anyway.
    """
    manager = getattr(producer, "_transaction_manager", None)
    complete = getattr(manager, "_complete_transaction", None)
    if (
        manager is None
        or complete is None
        or not isinstance(getattr(manager, "_pending_txn_offset_commits", None), dict)
    ):
        log.warning(
            "kafka-python %s: transaction manager internals differ from 3.0.x; refused-offsets fix not applied",
            KAFKA_PYTHON_VERSION,
        )
        return False

    def complete_and_forget() -> None:
        complete()
        manager._pending_txn_offset_commits.clear()

    manager._complete_transaction = complete_and_forget
    return True
