"""Start a real Prometheus server (Debian's `prometheus`) on loopback and query it over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from adae_stream.stream.broker import free_port


class Prometheus:
    def __init__(self, tmp: Path, targets: list[str], job: str = "adae-stream", rule_files: list[Path] = ()) -> None:
        binary = shutil.which("prometheus")
        assert binary, "the prometheus server is required (Debian package 'prometheus'); `make test` installs it"
        self.port = free_port()
        cfg = tmp / "prometheus.yml"
        cfg.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
                    "rule_files": [str(p) for p in rule_files],
                }
            )
        )
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=open(tmp / "prometheus.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(self.base + "/-/ready", timeout=1).status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("prometheus did not become ready: " + (tmp / "prometheus.log").read_text()[-2000:])

    def query(self, expr: str) -> float | None:
        url = self.base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict]:
        """The alerts pending or firing now, as the rules evaluated them (labels, annotations, state)."""
        body = json.loads(urllib.request.urlopen(self.base + "/api/v1/alerts", timeout=5).read())
        return body["data"]["alerts"]

    def wait_for(self, expr: str, predicate, timeout_s: float = 30.0) -> float | None:
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.query(expr)
            if value is not None and predicate(value):
                return value
            time.sleep(0.5)
        return value

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
