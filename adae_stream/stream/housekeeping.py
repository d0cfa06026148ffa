"""What the loop does about once a second besides records: collect kafka-python's cyclic garbage, export
each partition's lag, and say whether a broker is reachable."""

from __future__ import annotations

import gc
import time

from adae_stream.clients import KafkaError
from adae_stream.stream.assignments import Assignments
from adae_stream.stream.session import KafkaSession
from adae_stream.stream.telemetry import Metrics

HOUSEKEEPING_S = 1.0


class Housekeeping:
    def __init__(self, session: KafkaSession, partitions: Assignments, metrics: Metrics) -> None:
        self.session = session
        self.partitions = partitions
        self.metrics = metrics
        self._last = 0.0

    def run_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last < HOUSEKEEPING_S:
            return
        self._last = now
        # kafka-python 3 raises (and keeps) a KafkaTimeoutError for each wait in poll() that times out, a
        # cycle of traceback, frames and closures that outlives the young collections. At 1,830
        # requests/s, ~200,000 such objects piled up every ~3 s and were freed in one full collection
        # of 60-70 ms that stalled every thread. Collected every second here, each pass took < 5 ms.
        gc.collect()
        self._export_lag()
        self.metrics.set_kafka_up(self.session.broker_connected())

    def _export_lag(self) -> None:
        """Per partition: the high watermark minus what is committable (or, with nothing pending, the
        consumer's position)."""
        consumer, tracker = self.session.consumer, self.partitions.tracker
        for tp in self.partitions.positioned:
            hw = consumer.highwater(tp)
            point = tracker.commit_point(tp)
            if point is None:
                try:
                    point = consumer.position(tp, timeout_ms=100)
                except KafkaError:
                    continue
            if hw is not None and point is not None:
                self.metrics.set_lag(tp.topic, tp.partition, max(0, hw - point))
