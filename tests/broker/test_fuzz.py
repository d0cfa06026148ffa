"""Hostile input: >= 1000 generated bad records mixed with good ones, against the real process."""

from __future__ import annotations

import io
import json
import signal

import numpy as np

from adae_stream.codecs import encode_request
from adae_stream.errors import DEAD_LETTER_REASONS
from tests.kafka_helpers import collect, make_config, producer
from tests.process_helpers import PipelineProcess

MAX_BYTES = 64 * 1024


def bad_records(rng: np.random.Generator, n: int, good_x: np.ndarray):
    """Yields (value, headers, expected_reason or None) for n bad records of many kinds."""
    v2 = lambda body: json.dumps(body).encode()  # noqa: E731
    valid = encode_request(good_x[:2], "v2", "x")[0]

    def npy(arr, allow_pickle=False):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=allow_pickle)
        return buf.getvalue()

    proto, _ = encode_request(good_x[:2], "proto", "p")
    triton, triton_headers = encode_request(good_x[:2], "triton", "t")
    triton_len = dict(triton_headers)["inference-header-content-length"]

    def wrong_length(n: int) -> bytes:
        return str(n + 1 if n == int(triton_len) else n).encode()

    kinds = [
        lambda: (rng.bytes(int(rng.integers(1, 2000))), [], None),
        lambda: (rng.bytes(int(rng.integers(1, 500))), [("content-type", b"application/json")], "decode"),
        lambda: (b"", [], "decode"),
        lambda: (valid[: int(rng.integers(1, len(valid) - 1))], [("content-type", b"application/json")], "decode"),
        lambda: (b"[" * int(rng.integers(2000, 30000)) + b"]" * 10, [("content-type", b"application/json")], "decode"),
        lambda: (
            v2({"inputs": [{"name": "i", "shape": [1, 9, 8, 1], "datatype": "FP32", "data": [0.0] * 72}]}),
            [],
            "shape",
        ),
        lambda: (
            v2({"inputs": [{"name": "i", "shape": [2, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}]}),
            [],
            "shape",
        ),
        lambda: (
            v2({"inputs": [{"name": "i", "shape": [1, 8, 8, 1], "datatype": "BYTES", "data": ["a"] * 64}]}),
            [],
            "dtype",
        ),
        lambda: (
            v2({"inputs": [{"name": "i", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": ["x"] * 64}]}),
            [],
            "dtype",
        ),
        lambda: (v2({"instances": [[[["1"]] * 8] * 8]}), [], "dtype"),
        lambda: (
            b'{"inputs":[{"name":"i","shape":[1,8,8,1],"datatype":"FP32","data":['
            + b",".join([b"NaN"] + [b"0"] * 63)
            + b"]}]}",
            [],
            "non_finite",
        ),
        lambda: (
            b'{"instances":['
            + json.dumps(np.zeros((8, 8, 1)).tolist()).encode().replace(b"0.0", b"Infinity", 1)
            + b"]}",
            [],
            "non_finite",
        ),
        lambda: (
            v2({"inputs": [{"name": "i", "shape": [-5, 8, 8, 1], "datatype": "FP32", "data": [0.0]}]}),
            [],
            "shape",
        ),
        lambda: (
            v2({"inputs": [{"name": "i", "shape": [10**15, 8, 8, 1], "datatype": "FP32", "data": [0.0]}]}),
            [],
            "too_large",
        ),
        lambda: (
            rng.bytes(MAX_BYTES + int(rng.integers(1, 5000))),
            [("content-type", b"application/x-npy")],
            "too_large",
        ),
        lambda: (
            b"<xml/>",
            [("content-type", rng.choice([b"text/xml", b"application/protobuf", b"image/png"]))],
            "decode",
        ),
        lambda: (
            v2({"inputs": [{"name": "a", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}] * 2}),
            [],
            "schema",
        ),
        lambda: (v2({"inputs": "nope"}), [], "schema"),
        lambda: (npy(np.zeros((1, 8, 8, 2), np.float32)), [("content-type", b"application/x-npy")], "shape"),
        lambda: (
            npy(np.array([[None] * 8] * 8, dtype=object).reshape(1, 8, 8, 1), allow_pickle=True),
            [("content-type", b"application/x-npy")],
            "dtype",
        ),
        lambda: (npy(np.zeros((3, 8, 8, 1), np.float32))[:-17], [("content-type", b"application/x-npy")], "shape"),
        lambda: (b"\x93NUMPY\x01\x00" + rng.bytes(40), [("content-type", b"application/x-npy")], "decode"),
        # protobuf (Seldon Core v2), Triton binary JSON, CloudEvents: each damaged
        lambda: (proto[: int(rng.integers(1, len(proto) - 1))], [("content-type", b"application/x-protobuf")], None),
        lambda: (
            proto.replace(b"\x00\x00\x80", b"\x00\x00", 1)[:-4],
            [("content-type", b"application/x-protobuf")],
            None,
        ),
        lambda: (rng.bytes(int(rng.integers(1, 300))), [("content-type", b"application/x-protobuf")], None),
        lambda: (b"\x00\x01" + rng.bytes(3), [], "decode"),  # schema-registry magic, framing cut short
        lambda: (triton, [("Inference-Header-Content-Length", wrong_length(int(rng.integers(-5, 10**6))))], "decode"),
        lambda: (triton[: -int(rng.integers(1, 200))], [("Inference-Header-Content-Length", triton_len)], "shape"),
        lambda: (b"{" + rng.bytes(50), [("content-type", b"application/cloudevents+json")], "decode"),
        lambda: (valid, [("ce_specversion", b"1.0"), ("ce_type", b"org.kubeflow.serving.inference.request")], "schema"),
    ]
    for i in range(n):
        yield kinds[i % len(kinds)]()


def test_fuzz_thousand_bad_records(broker, digits_setup, digits_detector_path, tmp_path):
    X = digits_setup["Xte"]
    cfg = make_config(broker.bootstrap, digits_detector_path, kafka={"max_message_bytes": MAX_BYTES})
    proc = PipelineProcess(cfg, tmp_path, "fuzz").start()
    rng = np.random.default_rng(11)
    try:
        assert proc.wait_log("partitions assigned", timeout_s=90)
        rss_start = proc.rss_mb()
        p = producer(broker.bootstrap)
        bad, good = {}, set()
        for i, (value, headers, reason) in enumerate(bad_records(rng, 1100, X)):
            key = f"bad-{i}"
            p.send(cfg.kafka.input_topic, value=value, key=key.encode(), headers=headers)
            bad[key] = (value, reason)
            if i % 5 == 0:
                gid = f"good-{i}"
                payload, h = encode_request(
                    X[i % 400 : i % 400 + 3], rng.choice(["v2", "v1", "npy", "proto", "triton"]), gid
                )
                p.send(cfg.kafka.input_topic, value=payload, key=gid.encode(), headers=h)
                good.add(gid)
        p.flush()
        p.close()
        dlq = collect(broker.bootstrap, cfg.kafka.dead_letter_topic, len(bad), timeout_s=120)
        answers = collect(broker.bootstrap, cfg.kafka.output_topic, len(good), timeout_s=60)
        assert proc.proc.poll() is None, "the pipeline crashed:\n" + proc.text()[-3000:]
        rss_end = proc.rss_mb()
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.cleanup()
    by_key = {r.key.decode(): r for r in dlq}
    assert set(by_key) == set(bad)  # every bad record, and only those
    reasons = {}
    for key, rec in by_key.items():
        h = dict(rec.headers)
        reason = h["error-reason"].decode()
        assert reason in DEAD_LETTER_REASONS and h["error-message"]
        value, expected = bad[key]
        if expected is not None:
            assert reason == expected, (key, reason, expected, h["error-message"])
        if reason != "too_large":
            assert rec.value == value  # unchanged
        reasons[reason] = reasons.get(reason, 0) + 1
    assert {r.key.decode() for r in answers} == good
    print(
        f"\n[fuzz] bad={len(bad)} good={len(good)} dead-letter reasons={reasons} RSS {rss_start:.0f} -> {rss_end:.0f} "
        "MB"
    )
    assert rss_end - rss_start < 200
