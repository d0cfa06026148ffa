"""Rebalance hooks, run by kafka-python 3 on its I/O loop, where blocking consumer calls are forbidden.

Revocation is handled right here: while this hook runs, the pipeline thread is parked inside
``consumer.poll()`` (which awaits the hook before it sends JoinGroup), so finishing in-flight work from
this loop touches nothing concurrently, and the group only moves our partitions once the commit is done.
Assignment is queued: the pipeline thread seeks the new partitions to their committed offsets (blocking
calls) before it ingests anything from them. Loss (evicted from the group) drops the lost partitions'
pending work and aborts an open transaction: their new owner redoes them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from adae_stream.clients import RebalanceListenerBase, TopicPartition
from adae_stream.stream.commit import Committer

log = logging.getLogger(__name__)


class PartitionOwner(Protocol):
    """What the hooks need of the pipeline (stream/app.py's Pipeline)."""

    closing: bool  # set at shutdown: close() may revoke, and the drain already did that work

    def assigned(self, partitions: set[TopicPartition]) -> None: ...

    @property
    def committer(self) -> Committer: ...

    def finish_in_flight(self) -> None: ...
    def forget(self, partitions: set[TopicPartition]) -> None: ...
    def lose(self, lost: set[TopicPartition]) -> None: ...


def _names(partitions: Iterable[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}-{tp.partition}" for tp in partitions)


class RebalanceListener(RebalanceListenerBase):
    def __init__(self, pipeline: PartitionOwner) -> None:
        self.pipeline = pipeline

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pipeline = self.pipeline
        if pipeline.closing or not revoked:
            return
        log.info("partitions revoked: %s; finishing in-flight work first", _names(revoked))
        try:
            pipeline.finish_in_flight()
            await pipeline.committer.commit_on_revoke()
        except Exception as exc:
            log.error("could not commit in-flight work before revocation: %s (its new owner redoes it)", exc)
        pipeline.forget(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.pipeline.assigned(set(assigned))

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        log.warning(
            "partitions lost (evicted from the group): %s; their uncommitted work is dropped and redone by "
            "their new owner",
            _names(lost),
        )
        self.pipeline.lose(set(lost))
