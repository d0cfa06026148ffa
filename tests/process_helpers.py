"""Run `adae-stream run` as a real subprocess (so SIGKILL/SIGTERM and RSS are real), and produce traffic."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from adae_stream.codecs import encode_request
from adae_stream.config import Config
from tests.kafka_helpers import producer
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cli(command_line: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``adae-stream <command_line>`` as its own process (the arguments are split like a shell's)."""
    return subprocess.run(
        [sys.executable, "-m", "adae_stream.cli", *shlex.split(command_line)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def readme_first_command() -> str:
    """The first command of the README's first shell block: what a newcomer runs first."""
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    commands = [
        line.split("#")[0].strip()
        for b in blocks
        for line in b.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return commands[0]


class PipelineProcess:
    """`adae-stream run` (or another command on the same config, e.g. decide) as its own process."""

    def __init__(self, cfg: Config, tmp: Path, name: str, command: str = "run") -> None:
        self.cfg_path = tmp / f"{name}.yaml"
        self.cfg_path.write_text(yaml.safe_dump(cfg.model_dump()))
        self.tmp, self.name, self.command = tmp, name, command
        self.proc: subprocess.Popen | None = None
        self.log: Path | None = None
        self.starts = 0

    def start(self) -> PipelineProcess:
        self.starts += 1
        self.log = self.tmp / f"{self.name}-{self.starts}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONFAULTHANDLER": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adae_stream.cli", self.command, "--config", str(self.cfg_path)],
            cwd=ROOT,
            stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def wait_log(self, needle: str, count: int = 1, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.text().count(needle) >= count:
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout_s: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            # PYTHONFAULTHANDLER: SIGABRT writes every thread's stack to the log, so a hang explains itself
            os.kill(self.proc.pid, signal.SIGABRT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
            raise AssertionError(f"{self.name} did not exit within {timeout_s}s:\n{self.text()[-6000:]}") from None

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class Traffic(threading.Thread):
    """Steady V2 requests of `batch` instances at `rate` per second until stop(); remembers ids in order."""

    def __init__(
        self, bootstrap: str, topic: str, X: np.ndarray, rate: float, batch: int = 4, prefix: str = "t"
    ) -> None:
        super().__init__(daemon=True)
        self.p = producer(bootstrap)
        self.topic, self.X, self.rate, self.batch, self.prefix = topic, X, rate, batch, prefix
        self.ids: list[str] = []
        self.sent_at: dict[str, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        i, start = 0, time.monotonic()
        while not self._halt.is_set():
            rid = f"{self.prefix}-{i}"
            j = (i * self.batch) % (len(self.X) - self.batch)
            payload, headers = encode_request(self.X[j : j + self.batch], "v2", rid)
            self.p.send(self.topic, value=payload, key=rid.encode(), headers=headers)
            self.ids.append(rid)
            self.sent_at[rid] = time.monotonic()
            i += 1
            self._halt.wait(max(0.0, start + i / self.rate - time.monotonic()))
        self.p.flush()

    def flow(self, requests: int, timeout_s: float = 60.0) -> None:
        """Let the traffic run for ``requests`` more requests: a while measured by count, not by clock."""
        target = len(self.ids) + requests
        wait_for(lambda: len(self.ids) >= target, timeout_s, f"{requests} more requests sent")

    def stop(self) -> list[str]:
        """Stop sending (idempotent; safe before start) and return the ids sent."""
        self._halt.set()
        if self.is_alive():
            self.join(30)
        if self.p is not None:
            self.p.close()
            self.p = None
        return self.ids
