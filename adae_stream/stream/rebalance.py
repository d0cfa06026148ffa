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
from typing import TYPE_CHECKING

from kafka import AsyncConsumerRebalanceListener

if TYPE_CHECKING:
    from adae_stream.stream.app import Pipeline

log = logging.getLogger(__name__)


def _names(partitions) -> list[str]:
    return sorted(f"{tp.topic}-{tp.partition}" for tp in partitions)


class RebalanceListener(AsyncConsumerRebalanceListener):
    def __init__(self, pipeline: "Pipeline") -> None:
        self.pipeline = pipeline

    async def on_partitions_revoked(self, revoked):
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

    async def on_partitions_assigned(self, assigned):
        self.pipeline.assignments.put(set(assigned))

    async def on_partitions_lost(self, lost):
        log.warning("partitions lost (evicted from the group): %s; their uncommitted work is dropped and redone by "
                    "their new owner", _names(lost))
        self.pipeline.lose(set(lost))
