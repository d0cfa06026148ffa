"""Apache Kafka for the delivery tests: a pinned 4.x broker fetched from Maven Central, one KRaft node.

No Docker and no tarball: ``pom.xml`` beside this file names the ``kafka_2.13`` artifact and a log4j2
backend; ``mvn dependency:copy-dependencies`` copies it and its runtime dependencies into a cache keyed by
the POM's hash, once (offline afterwards). The node is formatted in a fresh directory (combined mode:
broker and controller in one JVM), started on free loopback ports in its own session, and stopped by PID
(its whole process group), like the embedded Tansu fixture.

``security="sasl_ssl"`` starts the least-privilege broker of the security tests: clients on SASL_SSL with
SCRAM-SHA-512 (certificate made by keytool for this run), the StandardAuthorizer, and a plaintext listener
on loopback for the test harness's own admin work (the super user ANONYMOUS there).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from adae_stream.stream.broker import free_port, stop_process_group

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J = HERE / "log4j2.properties"
CACHE = Path(os.environ.get("ADAE_KAFKA_CACHE", Path.home() / ".cache" / "adae-stream" / "apache-kafka"))
START_TIMEOUT_S = 120.0
# A small heap and the serial collector: the node serves a handful of test clients on 2 cores, and a JVM
# sized for production would take memory and start-up time from the pipelines under test.
JVM_OPTS = ["-Xms256m", "-Xmx768m", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-Djava.awt.headless=true"]


def kafka_version() -> str:
    text = POM.read_text()
    return text.split("<kafka.version>", 1)[1].split("</kafka.version>", 1)[0]


def kafka_libs() -> Path:
    """The broker's classpath folder, fetched with Maven on first use (a file lock serialises fetches)."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    home = CACHE / f"{kafka_version()}-{digest}"
    libs, done = home / "libs", home / "complete"
    if done.exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return libs
        if shutil.which("mvn") is None:
            raise RuntimeError("the Apache Kafka test broker needs Maven (mvn) to fetch its jars once")
        shutil.rmtree(libs, ignore_errors=True)
        cmd = [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
            raise RuntimeError(
                f"fetching Apache Kafka with Maven failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        done.write_text(" ".join(sorted(p.name for p in libs.iterdir())))
    return libs


@dataclass(frozen=True)
class Scram:
    """A SCRAM-SHA-512 user the broker knows from format time."""

    name: str
    password: str


@dataclass
class ApacheKafka:
    """One Apache Kafka KRaft node. ``bootstrap`` is where clients connect (SASL_SSL when secured);
    ``admin_bootstrap`` is the harness's plaintext listener (the same as ``bootstrap`` when not secured)."""

    security: str | None = None  # None (PLAINTEXT) or "sasl_ssl"
    users: tuple[Scram, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    jvm_opts: tuple[str, ...] = tuple(JVM_OPTS)
    workdir: Path | None = None
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.port, self.admin_port, self.controller_port = free_port(), free_port(), free_port()
        self._own_dir = self.workdir is None
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="adae-kafka-"))
        self.log_file = self.workdir / "broker.log"
        self.ca_file = self.workdir / "ca.pem"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin_bootstrap(self) -> str:
        return f"127.0.0.1:{self.admin_port if self.security else self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # ------------------------------------------------------------------ configuration
    def properties(self) -> dict[str, str]:
        """Combined mode, one node, internal topics with one replica and few partitions: the first group
        join and the first transaction on a fresh node take a fraction of a second instead of ~3 s with
        the 50 offsets partitions a broker creates by default."""
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "3",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # open transactions of a SIGKILLed producer are aborted once they time out: checked each second
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "log.flush.interval.messages": "9223372036854775807",
        }
        if self.security is None:
            props |= {
                "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
                "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            }
        else:
            props |= {
                "listeners": (
                    f"SASL_SSL://127.0.0.1:{self.port},INTERNAL://127.0.0.1:{self.admin_port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}"
                ),
                "advertised.listeners": f"SASL_SSL://127.0.0.1:{self.port},INTERNAL://127.0.0.1:{self.admin_port}",
                "inter.broker.listener.name": "INTERNAL",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                ),
                "ssl.keystore.type": "PKCS12",
                "ssl.keystore.location": str(self.workdir / "broker.p12"),
                "ssl.keystore.password": "broker-store",
                "ssl.key.password": "broker-store",
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                # the plaintext harness listener and the controller listener authenticate as ANONYMOUS
                "super.users": "User:ANONYMOUS",
                "allow.everyone.if.no.acl.found": "false",
            }
        return props | self.extra

    def _certificate(self) -> None:
        """A self-signed certificate for 127.0.0.1, made for this run; clients trust it as their CA."""
        store = self.workdir / "broker.p12"
        common = ["-keystore", str(store), "-storetype", "PKCS12", "-storepass", "broker-store"]
        make = ["keytool", "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "2"]
        subject = ["-dname", "CN=127.0.0.1", "-ext", "SAN=IP:127.0.0.1,DNS:localhost", "-keypass", "broker-store"]
        subprocess.run(
            [*make, *subject, *common],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["keytool", "-exportcert", "-rfc", "-alias", "broker", "-file", str(self.ca_file), *common],
            check=True,
            capture_output=True,
        )

    # ------------------------------------------------------------------ lifecycle
    def _java(self, *args: str) -> list[str]:
        java = shutil.which("java") or "java"
        classpath = f"{kafka_libs()}/*"
        return [java, *self.jvm_opts, f"-Dlog4j2.configurationFile={LOG4J}", "-cp", classpath, *args]

    def start(self) -> ApacheKafka:
        config = self.workdir / "server.properties"
        if self.security:
            self._certificate()
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # "=": a random id may begin with "-", which the tool would read as an option
        fmt = ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)]
        for user in self.users:
            fmt += [f"--add-scram=SCRAM-SHA-512=[name={user.name},password={user.password}]"]
        formatted = subprocess.run(self._java(*fmt), capture_output=True, text=True, timeout=120)
        if formatted.returncode != 0:
            raise RuntimeError(f"formatting the Kafka log directory failed:\n{formatted.stdout}{formatted.stderr}")
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(
                self._java("kafka.Kafka", str(config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Listening is not enough: the node answers metadata with no brokers until it has registered."""
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Apache Kafka exited at start ({self.proc.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(Exception):
                admin = KafkaAdminClient(bootstrap_servers=self.admin_bootstrap, request_timeout_ms=5000)
                try:
                    if admin.describe_cluster().get("brokers"):
                        return
                finally:
                    admin.close()
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Apache Kafka did not become ready within {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout_s)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def admin(self):
        """A KafkaAdminClient on the harness listener (a super user on the secured broker)."""
        from kafka import KafkaAdminClient

        return KafkaAdminClient(bootstrap_servers=self.admin_bootstrap)

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
