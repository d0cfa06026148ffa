"""The demo's closing checks: every label handled before the pipeline stops, and every request answered once
(the output topic read again, independently of the live view)."""

from __future__ import annotations

import time

from adae_stream.config import KafkaConfig
from adae_stream.feedback.outcome import FEEDBACK_RESULTS


def wait_for_labels(registry, sent: int, timeout_s: float) -> None:
    """Until the service has handled every feedback record sent (or the timeout)."""
    if registry is None:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        handled = sum(
            registry.get_sample_value("adae_feedback_records_total", {"result": r}) or 0.0 for r in FEEDBACK_RESULTS
        )
        if handled >= sent:
            return
        time.sleep(0.2)


def delivery_check(bootstrap: str, kafka: KafkaConfig, produced: set[str]) -> dict:
    from collections import Counter

    from adae_stream.clients.build import plain_reader
    from adae_stream.codecs import decode_response

    c = plain_reader(kafka, bootstrap, kafka.output_topic)
    counts: Counter = Counter()
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 2.0:
        polled = c.poll(timeout_ms=300)
        for records in polled.values():
            idle_since = time.monotonic()
            for rec in records:
                counts[decode_response(rec.value, rec.headers)["id"]] += 1
    c.close()
    mine = {k: v for k, v in counts.items() if k in produced}
    return {
        "produced": len(produced),
        "answered": len(mine),
        "missing": len(produced - set(mine)),
        "duplicates": sum(v - 1 for v in mine.values()),
    }
