"""What the feedback join costs now that every replica reads the whole group's answers (feedback/join_tail.py).

    python -m benchmarks.feedback_join [--answers 20000] [--rounds 2]

1. Per answer, in one run: the join fed from the result arrays the replica has in hand (what the
   pipeline did before: ``remember`` at publish) against the join fed from the answer record (what every
   replica does now: ``read_record`` decodes it, then ``remember``), and the alternative of keeping the
   record undecoded until a label asks, for V2 JSON and npy answers of 4 and 64 instances. Per label:
   ``submit`` of a label whose answer is held.
2. Memory: bytes held per answer (tracemalloc) for answers of 4 instances; per replica, before, a third
   of the group's answers with three replicas, now all of them.
3. End to end on the embedded broker: tabular V2 requests through one pipeline with no feedback topic
   against one with it (so the tail reads back every answer), alternating, instances/s.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from types import SimpleNamespace

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _result(n: int, rng) -> dict[str, np.ndarray]:
    return {
        "corrected": rng.integers(0, 10, n),
        "is_adversarial": rng.random(n) < 0.1,
        "instance_score": rng.random(n).astype(np.float32),
        "no_defense": rng.integers(0, 10, n),
        "defense": rng.integers(0, 10, n),
    }


def _answers(fmt: str, n_instances: int, count: int) -> list[tuple[str, dict, SimpleNamespace]]:
    from adae_stream.codecs import RawRecord, decode, encode, encode_request
    from tests.answer_info import ANSWER_INFO

    rng = np.random.default_rng(0)
    out = []
    now_ms = int(time.time() * 1000)
    for i in range(count):
        rid = f"req-{i}"
        payload, headers = encode_request(np.zeros((n_instances, 4), np.float32), fmt, rid)
        req = decode(RawRecord("in", 0, i, None, payload, headers), (4,), 1 << 24)
        result = _result(n_instances, rng)
        value, out_headers = encode(req, result, ANSWER_INFO)
        out.append((rid, result, SimpleNamespace(topic="out", value=value, headers=out_headers, timestamp=now_ms)))
    return out


def per_record(count: int) -> list[dict]:
    from adae_stream.feedback.join import FeedbackJoin, LabelRecord
    from adae_stream.feedback.join_tail import read_record

    rows = []
    for fmt in ("v2", "npy"):
        for n in (4, 64):
            answers = _answers(fmt, n, count)
            before = FeedbackJoin(3600, 10**9)
            t = time.perf_counter()
            for rid, result, _ in answers:
                before.remember(rid, result, None, "adae", "1")
            local_us = (time.perf_counter() - t) / count * 1e6
            now = FeedbackJoin(3600, 10**9)
            t = time.perf_counter()
            for _, _, rec in answers:
                read_record(now, rec, None)
            read_us = (time.perf_counter() - t) / count * 1e6
            raw: dict = {}  # the alternative measured: keep each record undecoded until a label asks
            t = time.perf_counter()
            for _, _, rec in answers:
                raw[dict(rec.headers)["request-id"].decode()] = (rec.value, list(rec.headers), rec.timestamp)
            raw_us = (time.perf_counter() - t) / count * 1e6
            labels = np.zeros(n, np.int64)
            t = time.perf_counter()
            for i, (rid, _, _) in enumerate(answers):
                now.submit(LabelRecord("labels", 0, i, None, 0.0, rid, labels))
            now.journal.commit({("labels", 0): len(answers)})
            label_us = (time.perf_counter() - t) / count * 1e6
            rows.append(
                {"format": fmt, "instances": n, "remember_us": local_us, "read_us": read_us, "raw_us": raw_us}
                | {"label_us": label_us}
            )
    return rows


def memory(count: int) -> dict:
    """Bytes held per answer of 4 instances: decoded (what the join holds, before and now) and, for the
    alternative, the undecoded V2 JSON and npy records (value and headers)."""
    from adae_stream.feedback.join import FeedbackJoin
    from adae_stream.feedback.join_tail import read_record

    def held(fill) -> float:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        join = FeedbackJoin(3600, 10**9)
        fill(join)
        size = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        return size / count

    rng = np.random.default_rng(1)
    results = [_result(4, rng) for _ in range(count)]
    out = {"decoded": held(lambda j: [j.remember(f"req-{i}", r, None, "adae", "1") for i, r in enumerate(results)])}
    for fmt in ("v2", "npy"):
        records = [rec for _, _, rec in _answers(fmt, 4, count)]

        def fill(join, records=records) -> None:  # fresh copies: what the reader hands over is held, bytes too
            for rec in records:
                copy = [(k, bytes(bytearray(v))) for k, v in rec.headers]
                read_record(
                    join, SimpleNamespace(**{**vars(rec), "value": bytes(bytearray(rec.value)), "headers": copy}), None
                )

        out[f"undecoded {fmt}"] = held(fill)
    return out


def end_to_end(rounds: int, requests: int) -> list[dict]:
    from adae_stream import save_detector
    from adae_stream.clients.build import ensure_topics
    from adae_stream.stream.broker import EmbeddedBroker
    from benchmarks import e2e
    from benchmarks.models import BATCHING, tabular

    det, x = tabular()
    path = str(save_detector(det, f"{os.environ.get('TMPDIR', '/tmp')}/adae-feedback-bench-{os.getpid()}"))
    max_batch, buckets = BATCHING["tabular"]
    scorer = det.stream_scorer(buckets)
    scorer.warmup(max_batch)
    rows = []
    with EmbeddedBroker() as broker:
        for r in range(rounds):
            for feedback in (False, True):
                cfg = e2e._config(broker.bootstrap, path, max_batch, 5, buckets)
                if feedback:
                    cfg.kafka.feedback_topic = f"{cfg.kafka.output_topic}-labels"
                    cfg.kafka.shadow_topic = f"{cfg.kafka.output_topic}-shadow"
                ensure_topics(cfg, broker.bootstrap)
                records = e2e._records(np.concatenate([x] * 47)[: requests * 64], "v2", 64, f"fb{r}")
                p = e2e._producer(broker.bootstrap)
                for payload, headers, key in records:
                    p.send(cfg.kafka.input_topic, value=payload, key=key, headers=headers)
                p.flush()
                p.close()
                pipeline, thread = e2e._start_pipeline(cfg, scorer)
                t0 = time.time()
                out = e2e.read_topic(broker.bootstrap, cfg.kafka.output_topic, len(records), timeout_s=600)
                span = (max(out.values()) - t0 * 1000) / 1000.0
                joined = len(pipeline.labels.join) if pipeline.labels is not None else 0
                pipeline.stop()
                thread.join(60)
                rows.append(
                    {"round": r, "feedback": feedback, "inst_per_s": len(records) * 64 / span, "join_answers": joined}
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.feedback_join")
    ap.add_argument("--answers", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--requests", type=int, default=3000, help="requests of 64 instances per end-to-end run")
    args = ap.parse_args(argv)
    print(
        "1. per record (µs): an answer remembered from the results in hand (before) | read from the topic and"
        " decoded (now) | kept undecoded (the alternative)"
    )
    for row in per_record(args.answers):
        print(
            f"  {row['format']:>3} x{row['instances']:<3} remember {row['remember_us']:6.1f}"
            f"  read {row['read_us']:6.1f} ({row['read_us'] / row['remember_us']:.1f}x)"
            f"  kept undecoded {row['raw_us']:5.1f}   a label joined {row['label_us']:5.1f}"
        )
    mem = memory(args.answers)
    print(f"2. memory held per answer of 4 instances ({args.answers} answers):")
    for kind, per in mem.items():
        print(
            f"   {kind:13s} {per:6,.0f} B; per replica, 3 replicas, 1,000,000 answers in the window: "
            f"{per * 1e6 / 3 / 2**20:5,.0f} MiB for a third of them (before), {per * 1e6 / 2**20:5,.0f} MiB for all"
        )
    print("3. end to end, embedded broker, tabular V2 x64 (instances/s):")
    rows = end_to_end(args.rounds, args.requests)
    for row in rows:
        print(
            f"  round {row['round']} feedback {'on ' if row['feedback'] else 'off'} {row['inst_per_s']:10,.0f}"
            f"  (answers in the join: {row['join_answers']})"
        )
    for r in range(args.rounds):
        off, on = (row["inst_per_s"] for row in rows if row["round"] == r)
        print(f"  round {r}: on / off = {on / off:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
