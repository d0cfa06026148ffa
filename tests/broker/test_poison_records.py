"""No record can stop the service: each class of bad input against the real broker and the real process.

For every class: the record is dead-lettered with its reason (or answered, where it is a valid request in
an odd shape), the process keeps running, the good records around it are answered, the offsets committed
at the end cover exactly what was published, and a restart neither crashes nor redoes anything.
"""

from __future__ import annotations

import io
import json
import signal
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pytest
from kafka import KafkaConsumer
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.structs import TopicPartition

from adae_stream.codecs import decode_response, encode_request
from adae_stream.errors import DEAD_LETTER_REASONS
from adae_stream.stream.broker import free_port
from tests.kafka_helpers import collect, create_topic, make_config, producer
from tests.process_helpers import PipelineProcess
from tests.waiting import wait_for

LIMIT = 256 * 1024  # kafka.max_message_bytes
JSON = [("content-type", b"application/json")]
NPY = [("content-type", b"application/x-npy")]


class Null(bytes):
    """Stands for a null header value: kafka-python's send() refuses None, though the wire format and its
    own record builder allow it, and other clients send them."""


@pytest.fixture
def null_headers_on_the_wire(monkeypatch):
    append = DefaultRecordBatchBuilder.append

    def append_with_nulls(self, offset, timestamp, key, value, headers, *args, **kwargs):
        headers = [(k, None if isinstance(v, Null) else v) for k, v in headers]
        return append(self, offset, timestamp, key, value, headers, *args, **kwargs)

    monkeypatch.setattr(DefaultRecordBatchBuilder, "append", append_with_nulls)


@dataclass
class Case:
    name: str
    value: bytes | None
    headers: list
    key: bytes | None
    expect: str  # a dead-letter reason, or "answer"
    answer_id: str | None = None
    n: int = 0


def v2(x, rid, **extra) -> bytes:
    return json.dumps(
        {
            "id": rid,
            "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            **extra,
        }
    ).encode()


def npy_header(shape) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def cases(X: np.ndarray) -> list[Case]:
    x1, x2 = X[:1], X[:2]
    good_v1 = json.dumps({"instances": x2.tolist()}).encode()
    obj = io.BytesIO()
    np.save(obj, np.array([[None] * 8] * 8, dtype=object).reshape(1, 8, 8, 1), allow_pickle=True)
    zeros = ",".join(["0"] * 64)
    return [
        # header values: null, non-UTF-8, huge
        Case(
            "null-header-good", v2(x2, "null-h"), [("x-null", Null(b"")), *JSON], b"k-null-good", "answer", "null-h", 2
        ),
        Case("null-content-type", b"\x00\x01garbage", [("content-type", Null(b""))], b"k-null-ct", "decode"),
        Case("non-utf8-content-type", v2(x1, "ct"), [("content-type", b"\xff\xfe")], b"k-bad-ct", "decode"),
        Case(
            "non-utf8-request-id",
            good_v1,
            [("request-id", b"\xff\xfe\xfd"), *JSON],
            b"k-bad-rid",
            "answer",
            "fffefd",
            2,
        ),
        Case(
            "huge-header-good", v2(x1, "huge-h"), [("huge", b"h" * 300_000), *JSON], b"k-huge-h", "answer", "huge-h", 1
        ),
        Case("huge-header-bad", b"not json", [("x-huge", b"h" * 400_000), *JSON], b"k-huge-h-bad", "decode"),
        # keys of any bytes
        Case("binary-key", good_v1, JSON, b"\x00\xff\xfe\x80", "answer", "00fffe80", 2),
        Case("empty-key", v2(x1, "empty-key"), JSON, b"", "answer", "empty-key", 1),
        Case("huge-key", v2(x1, "huge-key"), JSON, b"K" * 300_000, "answer_too_large"),
        # ids: lone surrogates, huge, not strings
        Case("surrogate-id", v2(x1, "\ud800"), JSON, b"k-surrogate", "schema"),
        Case("surrogate-pair-half", v2(x1, "ok\udfffok"), JSON, b"k-surrogate2", "schema"),
        Case("huge-id", v2(x1, "i" * 150_000), JSON, b"k-huge-id", "answer_too_large"),
        Case("int-id", v2(x1, 5), JSON, b"k-int-id", "schema"),
        Case("list-id", v2(x1, ["a"]), JSON, b"k-list-id", "schema"),
        Case("null-id", v2(x1, None), JSON, b"k-null-id", "answer", "k-null-id", 1),
        # bodies nested 100,000 deep
        Case("deep-list", b"[" * 100_000 + b"]" * 100_000, JSON, b"k-deep", "decode"),
        Case("deep-object", b'{"a":' * 40_000 + b"1" + b"}" * 40_000, JSON, b"k-deep-obj", "decode"),
        Case(
            "deep-data",
            b'{"inputs":[{"name":"x","shape":[1,8,8,1],"datatype":"FP32","data":' + b"[" * 100_000,
            JSON,
            b"k-deep-data",
            "decode",
        ),
        # thousands of inputs in one request
        Case(
            "thousands-of-tensors",
            json.dumps(
                {
                    "inputs": [
                        {"name": f"t{i}", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0]} for i in range(3000)
                    ]
                }
            ).encode(),
            JSON,
            b"k-tensors",
            "schema",
        ),
        Case(
            "thousands-of-instances",
            b'{"instances":[' + b",".join([b"[" + zeros.encode() + b"]"] * 1500) + b"]}",
            JSON,
            b"k-instances",
            "shape",
        ),
        Case(
            "thousands-of-instances-v2",
            v2(np.zeros((1200, 8, 8, 1), np.float32), "many").replace(b"0.0", b"0"),
            JSON,
            b"k-many",
            "answer",
            "many",
            1200,
        ),
        # JSON with duplicate keys, NaN / Infinity literals
        Case("duplicate-keys", v2(x1, "first")[:-1] + b', "id": "last"}', JSON, b"k-dup", "answer", "last", 1),
        Case(
            "nan-data",
            b'{"id":"nan","inputs":[{"name":"x","shape":[1,8,8,1],"datatype":"FP32","data":[NaN,'
            + zeros[2:].encode()
            + b"]}]}",
            JSON,
            b"k-nan",
            "non_finite",
        ),
        Case(
            "nan-shape",
            b'{"id":"nan","inputs":[{"name":"x","shape":[NaN,8,8,1],"datatype":"FP32","data":['
            + zeros.encode()
            + b"]}]}",
            JSON,
            b"k-nan-shape",
            "schema",
        ),
        Case(
            "infinity",
            b'{"instances":[[' + b",".join([b"[[Infinity]" + b",[0]" * 7 + b"]"] * 8) + b"]]}",
            JSON,
            b"k-inf",
            "non_finite",
        ),
        Case(
            "nan-id",
            b'{"id":NaN,"inputs":[{"name":"x","shape":[1,8,8,1],"datatype":"FP32","data":[' + zeros.encode() + b"]}]}",
            JSON,
            b"k-nan-id",
            "schema",
        ),
        # npy with object dtype or absurd shapes
        Case("npy-object", obj.getvalue(), NPY, b"k-npy-obj", "dtype"),
        Case("npy-absurd-shape", npy_header((10**12, 8, 8, 1)) + b"\0" * 256, NPY, b"k-npy-absurd", "shape"),
        Case("npy-astronomic-shape", npy_header((2**70, 8, 8, 1)) + b"\0" * 256, NPY, b"k-npy-astro", "shape"),
        Case("npy-negative-shape", npy_header((-1, 8, 8, 1)) + b"\0" * 256, NPY, b"k-npy-neg", "shape"),
        # the odd but valid: no instances; no value at all
        Case("empty-request", v2(np.zeros((0, 8, 8, 1), np.float32), "empty"), JSON, b"k-empty", "answer", "empty", 0),
        Case("tombstone", None, [], b"k-tombstone", "decode"),
    ]


def metric_values(port: int, name: str) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith(name):
            labels, value = line.rsplit(" ", 1)
            out[labels] = float(value)
    return out


def test_every_class_of_bad_input_costs_only_its_record(
    apache_kafka, digits_setup, digits_detector_path, tmp_path, null_headers_on_the_wire
):
    X = digits_setup["Xte"]
    port = free_port()
    cfg = make_config(
        apache_kafka.bootstrap,
        digits_detector_path,
        kafka={"max_message_bytes": LIMIT},
        metrics={"enabled": True, "port": port},
    )
    all_cases = cases(X)
    # Apache Kafka refuses a record over the input topic's own max.message.bytes when it is produced; the
    # oversized cases are for an input topic managed elsewhere with a larger limit than the service's
    create_topic(apache_kafka.bootstrap, cfg.kafka.input_topic, max_message_bytes=str(16 * 1024 * 1024))
    proc = PipelineProcess(cfg, tmp_path, "poison").start()
    try:
        assert proc.wait_log("partitions assigned", timeout_s=90), proc.text()[-3000:]
        p = producer(apache_kafka.bootstrap)
        where: dict[tuple[int, int], Case] = {}
        good = {}
        for i, case in enumerate(all_cases):
            md = p.send(cfg.kafka.input_topic, value=case.value, key=case.key, headers=case.headers).get(30)
            where[(md.partition, md.offset)] = case
            gid = f"good-{i}"
            payload, h = encode_request(X[i : i + 2], ["v2", "v1", "npy"][i % 3], gid)
            p.send(cfg.kafka.input_topic, value=payload, key=gid.encode(), headers=h)
            good[gid] = 2
        p.flush()
        p.close()
        expect_dlq = [c for c in all_cases if c.expect != "answer"]
        expect_answers = {c.answer_id: c.n for c in all_cases if c.expect == "answer"} | good
        dlq = collect(apache_kafka.bootstrap, cfg.kafka.dead_letter_topic, len(expect_dlq), timeout_s=120)
        answers = collect(apache_kafka.bootstrap, cfg.kafka.output_topic, len(expect_answers), timeout_s=120)
        assert proc.proc.poll() is None, "the pipeline stopped:\n" + proc.text()[-3000:]
        dead = wait_for(  # the last acks reach the metrics a moment after the records reach their topics
            lambda: sum((d := metric_values(port, "adae_dead_letter_total")).values()) >= len(dlq) and d,
            30,
            "every dead letter counted",
        )
        assert metric_values(port, "adae_ready") == {"adae_ready": 1.0}
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.text()[-3000:]
    finally:
        proc.cleanup()

    # every bad record on the dead-letter topic once, with its reason, coordinates and (where it fits) its bytes
    got_dlq = defaultdict(list)
    for r in dlq:
        h = dict(r.headers)
        got_dlq[where[(int(h["source-partition"]), int(h["source-offset"]))].name].append((r, h))
    assert sorted(got_dlq) == sorted(c.name for c in expect_dlq)
    for case in expect_dlq:
        ((rec, h),) = got_dlq[case.name]
        assert h["error-reason"].decode() == case.expect, (case.name, h["error-message"][:300])
        assert h["error-message"] and h["source-topic"] == cfg.kafka.input_topic.encode()
        assert rec.value == (case.value or b"")
        assert rec.key == case.key
    assert dict(got_dlq["null-content-type"][0][1])["content-type"] == b""  # a null header value copied as empty
    huge = got_dlq["huge-header-bad"][0][1]
    assert "x-huge" not in huge and huge["error-headers-dropped"] == b"2"
    assert b"over the output topic's limit" in got_dlq["huge-id"][0][1]["error-message"]

    # every valid request answered once, the good ones around the bad ones included
    by_id = defaultdict(list)
    for r in answers:
        by_id[decode_response(r.value, r.headers)["id"]].append(r)
    assert set(by_id) == set(expect_answers)
    for rid, n in expect_answers.items():
        (rec,) = by_id[rid]
        assert len(decode_response(rec.value, rec.headers)["corrected"]) == n

    # metrics: the reasons counted are the reasons published
    published = defaultdict(int)
    for case in expect_dlq:
        published[case.expect] += 1
    for reason in DEAD_LETTER_REASONS:
        assert dead[f'adae_dead_letter_total{{reason="{reason}"}}'] == published.get(reason, 0), reason

    # the offsets committed cover exactly what was published: everything
    ends = {}
    for part, off in list(where) + [
        (r.partition, r.offset)
        for r in collect(apache_kafka.bootstrap, cfg.kafka.input_topic, 10**9, timeout_s=10, idle_s=2)
    ]:
        ends[part] = max(ends.get(part, 0), off + 1)
    c = KafkaConsumer(bootstrap_servers=apache_kafka.bootstrap, group_id=cfg.kafka.group_id, enable_auto_commit=False)
    committed = {part: c.committed(TopicPartition(cfg.kafka.input_topic, part)) for part in ends}
    c.close()
    assert committed == ends

    # a restart reads past all of it: no crash, nothing redone
    proc.start()
    try:
        assert proc.wait_log("partitions assigned", timeout_s=90), proc.text()[-3000:]
        # caught up: every partition's lag is exported and 0, so anything it would redo is done by now
        wait_for(
            lambda: (
                (lag := metric_values(port, "adae_consumer_lag{")) and len(lag) >= len(ends) and not any(lag.values())
            ),
            60,
            "the restarted pipeline at the end of every partition",
        )
        assert proc.proc.poll() is None
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.cleanup()
    assert len(collect(apache_kafka.bootstrap, cfg.kafka.output_topic, 10**9, timeout_s=10, idle_s=2)) == len(answers)
    assert len(collect(apache_kafka.bootstrap, cfg.kafka.dead_letter_topic, 10**9, timeout_s=10, idle_s=2)) == len(dlq)
