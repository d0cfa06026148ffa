"""RSS over a long run: the pipeline as a real process, steady traffic, RSS sampled from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np
import yaml
from kafka import KafkaProducer

from adae_stream.codecs import encode_request
from adae_stream.config import load_config


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak(
    bootstrap: str, det_path: str, x: np.ndarray, seconds: float, rate_rps: float = 200.0, per_request: int = 16
) -> dict:
    tag = uuid.uuid4().hex[:8]
    cfg = load_config(
        None,
        environ={},
        overrides={
            "kafka": {
                "bootstrap_servers": bootstrap,
                "input_topic": f"soak-{tag}",
                "output_topic": f"soak-out-{tag}",
                "dead_letter_topic": f"soak-dlq-{tag}",
                "group_id": f"soak-{tag}",
                "session_timeout_ms": 6000,
            },
            "detector": {"path": det_path},
            "metrics": {"enabled": True, "port": 0},
            "log_level": "WARNING",
        },
    )
    path = os.path.join(tempfile.mkdtemp(), "soak.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg.model_dump(), f)
    proc = subprocess.Popen(
        [sys.executable, "-m", "adae_stream.cli", "run", "--config", path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(15)
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    samples = []
    start = time.monotonic()
    i = 0
    next_sample = start
    while time.monotonic() - start < seconds:
        j = (i * per_request) % (len(x) - per_request)
        payload, headers = encode_request(x[j : j + per_request], "v2", f"s-{i}")
        p.send(cfg.kafka.input_topic, value=payload, key=f"s-{i}".encode(), headers=headers)
        i += 1
        if time.monotonic() >= next_sample:
            samples.append((time.monotonic() - start, rss_mb(proc.pid)))
            next_sample += 10
        time.sleep(max(0.0, start + i / rate_rps - time.monotonic()))
    p.flush()
    time.sleep(3)
    samples.append((time.monotonic() - start, rss_mb(proc.pid)))
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    from benchmarks.e2e import read_topic

    answered = len(read_topic(bootstrap, cfg.kafka.output_topic, i, timeout_s=120))
    rss = [s[1] for s in samples]
    return {
        "seconds": seconds,
        "requests": i,
        "answered": answered,
        "rate_rps": rate_rps,
        "rss_start_mb": rss[0],
        "rss_end_mb": rss[-1],
        "rss_max_mb": max(rss),
        "samples": samples,
    }
