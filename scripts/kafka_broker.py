#!/usr/bin/env python3
"""Fetch, start and stop a real single-node Apache Kafka broker for choreo's tests and demo.

Stdlib only. Used three ways:

* ``python scripts/kafka_broker.py fetch`` downloads the broker's jars with Maven
  (``scripts/kafka/pom.xml``) into a cache outside git: ``~/.cache/choreo/kafka-4.4.0/``,
  or ``$CHOREO_KAFKA_JARS``. A marker file written after a complete download makes later
  calls free.
* ``python scripts/kafka_broker.py run [--port 9092 --controller-port 9093]`` runs a broker
  in the foreground, prints its bootstrap address and stops it on Ctrl-C.
* ``python scripts/kafka_broker.py cluster`` runs a three-node cluster (one KRaft quorum,
  replication factor 3, ``min.insync.replicas=2``; see ``scripts/kafka_cluster.py``).
* ``KafkaBroker`` (a context manager) from Python: tests (``tests/conftest.py``) and
  benchmarks import this file as a module. :meth:`KafkaBroker.kill` SIGKILLs the JVM and
  keeps its data dir and ports; :meth:`KafkaBroker.restart` starts it again on them, as a
  machine that crashed and came back would (crash tests, the chaos suite).
* ``python scripts/kafka_broker.py run --secure`` (or ``KafkaBroker(secure=True)``) adds a
  SASL_SSL listener: SCRAM-SHA-256/512 and PLAIN users (SCRAM credentials written at
  format time with ``kafka-storage format --add-scram``), TLS with a CA, a broker
  certificate and a client certificate made at start with ``openssl`` (the broker
  requires the client certificate); see :class:`TlsFiles` and :data:`SECURE_USERS`.

The broker is a combined KRaft broker+controller bound to 127.0.0.1, with its log dir,
configuration and logs in a fresh temporary directory that is removed on stop. The JVM
runs in its own session; it is stopped by its own PID (SIGTERM, then SIGKILL after a
grace period), at interpreter exit through :mod:`atexit`, and by the kernel
(``PR_SET_PDEATHSIG``) if the Python process that started it dies, even by SIGKILL.
Nothing is ever killed by name.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import secrets
import shutil
import socket
import string
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import ClassVar, Self

SCRIPTS_DIR = Path(__file__).resolve().parent
if str(SCRIPTS_DIR) not in sys.path:  # imported by path from tests and benchmarks
    sys.path.append(str(SCRIPTS_DIR))

from _server_process import (  # noqa: E402 - found through the path set just above
    ServerProcess,
    free_port,
    run_foreground,
    tail,
)

__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "KafkaBroker",
    "fetch_jars",
    "free_port",
    "jars_dir",
    "main",
    "random_cluster_id",
]

logger = logging.getLogger("choreo.kafka_broker")

KAFKA_VERSION = "4.4.0"
KAFKA_DIR = SCRIPTS_DIR / "kafka"
POM = KAFKA_DIR / "pom.xml"
SERVER_TEMPLATE = KAFKA_DIR / "server.properties"
LOG4J2_CONFIG = KAFKA_DIR / "log4j2.properties"
MARKER = ".choreo-complete"
# The jar whose presence proves the download is the Kafka we asked for.
KAFKA_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"
JVM_OPTS = ("-Xmx1g", "-Xms256m", "-XX:+UseG1GC", "-Djava.awt.headless=true")
TOOL_JVM_OPTS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Djava.awt.headless=true")
"""The JVM options of the one-shot StorageTool ``format`` run before every broker start: a
short tool wants the quick compiler and the simplest collector (1.0-1.3 s instead of
1.9-2.2 s per format on a loaded 2-core machine; the broker keeps ``JVM_OPTS``)."""
DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093

SECURE_USERS = ("alice", "bob")
"""The SASL users of a secure broker (SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN); each gets a
random password per broker (:attr:`KafkaBroker.users`)."""


class TlsFiles:
    """The PEM files of a secure broker's TLS set-up, made with ``openssl`` in ``directory``.

    ``ca`` is the CA certificate both sides trust; ``broker_p12`` the broker's PKCS12
    keystore (certificate for 127.0.0.1 and localhost, signed by the CA);
    ``client_cert``/``client_key`` the client certificate and its unencrypted key;
    ``client_pem`` both in one file (a Java-style PEM keystore).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.store_password = secrets.token_urlsafe(12)
        """The password of the broker's PKCS12 keystore (random)."""
        self.ca = directory / "ca.pem"
        self.ca_key = directory / "ca.key"
        self.broker_p12 = directory / "broker.p12"
        self.client_cert = directory / "client.pem"
        self.client_key = directory / "client.key"
        self.client_pem = directory / "client-keystore.pem"

    def make(self) -> TlsFiles:
        """Create the CA, the broker keystore and the client certificate; return self."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise BrokerError("a secure broker needs openssl (apt-get install openssl)")
        self.directory.mkdir(parents=True, exist_ok=True)
        d = self.directory

        def run(*args: str) -> None:
            result = subprocess.run(
                [openssl, *args], capture_output=True, text=True, check=False, timeout=60
            )
            if result.returncode != 0:
                raise BrokerError(f"openssl {args[0]} failed: {result.stderr.strip()}")

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=choreo test CA", "-keyout", str(self.ca_key), "-out", str(self.ca),
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign")
        for name, subject, extension in (
            ("broker", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            ("client", "/CN=choreo-client", "extendedKeyUsage=clientAuth"),
        ):
            key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
            run("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                "-keyout", str(key), "-out", str(csr))
            (d / f"{name}.ext").write_text(extension + "\n")
            run("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key),
                "-CAcreateserial", "-days", "2", "-out", str(cert),
                "-extfile", str(d / f"{name}.ext"))
        run("pkcs12", "-export", "-in", str(d / "broker.pem"), "-inkey", str(d / "broker.key"),
            "-certfile", str(self.ca), "-name", "broker", "-out", str(self.broker_p12),
            "-passout", f"pass:{self.store_password}")
        self.client_pem.write_text(self.client_key.read_text() + self.client_cert.read_text())
        for path in (self.ca_key, self.client_key, self.client_pem, d / "broker.key"):
            path.chmod(0o600)
        return self


def _secure_settings(port: int, tls: TlsFiles, users: dict[str, str]) -> str:
    """Return the server.properties lines of a SASL_SSL listener on ``port``."""
    plain_users = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    prefix = "listener.name.sasl_ssl"
    return "\n".join(
        [
            "",
            "# SASL_SSL listener (scripts/kafka_broker.py --secure)",
            "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
            f"{prefix}.scram-sha-256.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"{prefix}.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"{prefix}.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
            f"{prefix}.ssl.keystore.type=PKCS12",
            f"{prefix}.ssl.keystore.location={tls.broker_p12}",
            f"{prefix}.ssl.keystore.password={tls.store_password}",
            f"{prefix}.ssl.key.password={tls.store_password}",
            f"{prefix}.ssl.truststore.type=PEM",
            f"{prefix}.ssl.truststore.location={tls.ca}",
            f"{prefix}.ssl.client.auth=required",
            "",
        ]
    )


class BrokerError(RuntimeError):
    """The broker's jars could not be fetched, or the broker did not start or serve."""


# --------------------------------------------------------------------------- jars


def jars_dir() -> Path:
    """Return the jar cache directory: ``$CHOREO_KAFKA_JARS`` or ``~/.cache/choreo/kafka-4.4.0``."""
    override = os.environ.get("CHOREO_KAFKA_JARS")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "choreo" / f"kafka-{KAFKA_VERSION}"


def _complete(directory: Path) -> bool:
    """Return whether ``directory`` holds a complete download (marker plus every jar it names)."""
    marker = directory / MARKER
    if not marker.is_file():
        return False
    names = [line for line in marker.read_text().splitlines() if line.endswith(".jar")]
    return KAFKA_JAR in names and all((directory / name).is_file() for name in names)


def fetch_jars(target: Path | None = None, *, quiet: bool = True) -> Path:
    """Ensure the broker's jars are in ``target`` (default :func:`jars_dir`) and return it.

    Reuses a complete earlier download; otherwise runs Maven's
    ``dependency:copy-dependencies`` on ``scripts/kafka/pom.xml`` (in a scratch copy, so
    the repository stays clean) and writes the marker last. Concurrent callers serialise
    on a lock file beside ``target``. Raises :class:`BrokerError` when Maven is missing or
    fails.
    """
    target = (target or jars_dir()).expanduser().resolve()
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with lock_path.open("w") as lock:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _complete(target):
                return target
            _download(target, quiet=quiet)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def _download(target: Path, *, quiet: bool) -> None:
    """Run Maven to copy the pom's dependencies into ``target`` and write the marker."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven ('mvn') is not on PATH: it is needed once to download the Kafka jars "
            f"into {target} (apt-get install maven), or set CHOREO_KAFKA_JARS to a "
            "directory that already holds them"
        )
    target.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="choreo-mvn-") as scratch:
        shutil.copy2(POM, Path(scratch) / "pom.xml")
        command = [
            mvn,
            *(["-q"] if quiet else []),
            "-B",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={target}",
        ]
        result = subprocess.run(
            command, cwd=scratch, capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise BrokerError(f"mvn failed (exit {result.returncode}) fetching Kafka jars:\n{tail}")
    jars = sorted(path.name for path in target.glob("*.jar"))
    if KAFKA_JAR not in jars:
        raise BrokerError(f"mvn finished but {KAFKA_JAR} is not in {target}")
    (target / MARKER).write_text(f"kafka {KAFKA_VERSION}\n" + "\n".join(jars) + "\n")
    logger.info("fetched %d jars into %s in %.1f s", len(jars), target, time.monotonic() - started)


# --------------------------------------------------------------------------- helpers


def random_cluster_id() -> str:
    """Return a new KRaft cluster id, in the format of ``StorageTool random-uuid``.

    That is a random UUID as unpadded URL-safe base64 (22 characters) that does not start
    with '-'. Made here rather than by a JVM run of ``random-uuid``, which saves one JVM
    start-up (about 0.8 s on a 2-core machine) per broker.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def java_executable() -> str:
    """Return the ``java`` to run: ``$JAVA_HOME/bin/java`` if it exists, else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerError(
            "no 'java' on PATH (Kafka needs Java 17+): apt-get install openjdk-17-jre-headless"
        )
    return found


# --------------------------------------------------------------------------- readiness


def _tcp_open(host: str, port: int) -> bool:
    """Return whether a TCP connection to ``host:port`` succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _served_cluster_id(bootstrap: str, timeout: float) -> str | None:
    """Return the cluster id of the broker at ``bootstrap`` once it lists a broker, else None.

    Comparing it with the id the log dir was formatted with makes sure the answer comes
    from our broker, not from another process that already held the port.
    """
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        host, _, port = bootstrap.rpartition(":")
        return _raw_cluster_id(host, int(port), timeout)
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000)})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:  # KafkaException while the broker is still starting
        return None
    cluster_id: str | None = metadata.cluster_id
    return cluster_id if metadata.brokers else None


def _raw_request(sock: socket.socket, api_key: int, version: int, body: bytes) -> bytes:
    """Send one Kafka request (header v1) on ``sock`` and return the response after its header."""
    client_id = b"choreo-probe"
    header = struct.pack(">hhih", api_key, version, 7, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    response = _recv_exact(sock, size)
    return response[4:]  # strip the correlation id (response header v0)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes from ``sock`` or raise :class:`ConnectionError`."""
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _raw_cluster_id(host: str, port: int, timeout: float) -> str | None:
    """Probe the broker without a client library: ApiVersions v0, then Metadata v4.

    Metadata v4 is the oldest version Kafka 4 still serves. Its response body is
    throttle_time_ms, the brokers array (node_id, host, port, nullable rack), then the
    nullable cluster_id; a ready broker lists itself. Returns the cluster id or None.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            versions = _raw_request(sock, 18, 0, b"")
            if struct.unpack_from(">h", versions, 0)[0] != 0:
                return None
            # topics = null (all), allow_auto_topic_creation = false
            body = _raw_request(sock, 3, 4, struct.pack(">ib", -1, 0))
            (brokers,) = struct.unpack_from(">i", body, 4)
            offset = 8
            for _ in range(brokers):
                (host_length,) = struct.unpack_from(">h", body, offset + 4)
                offset += 4 + 2 + host_length + 4
                (rack_length,) = struct.unpack_from(">h", body, offset)
                offset += 2 + max(rack_length, 0)
            (id_length,) = struct.unpack_from(">h", body, offset)
            if brokers <= 0 or id_length < 0:
                return None
            return body[offset + 2 : offset + 2 + id_length].decode()
    except (OSError, struct.error, UnicodeDecodeError):
        return None


def _port_in_use(port: int) -> bool:
    """Return whether something already listens on (or holds) 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


# --------------------------------------------------------------------------- broker

class KafkaBroker(ServerProcess):
    """A single-node KRaft Kafka broker in a temporary directory, started and stopped by PID.

    ``port=0`` (the default) picks free ports for the broker and the controller;
    ``controller_port=None`` means ``port + 1`` for a fixed port, a free one for port 0.
    After :meth:`start` returns, :attr:`bootstrap` serves metadata requests and
    :attr:`startup_seconds` is the wall time of format + JVM start + readiness.
    :meth:`stop` sends SIGTERM, SIGKILL after 20 s, and removes the dir.
    """

    kind: ClassVar[str] = "kafka broker"
    error: ClassVar[type[Exception]] = BrokerError

    def __init__(
        self,
        *,
        port: int = 0,
        controller_port: int | None = None,
        jars: Path | None = None,
        startup_timeout: float = 60.0,
        keep_dir: bool = False,
        secure: bool = False,
        users: dict[str, str] | None = None,
    ) -> None:
        super().__init__(keep_dir=keep_dir)
        self.secure = secure
        self.users = (
            {name: secrets.token_urlsafe(12) for name in SECURE_USERS} if users is None else users
        )
        """The SASL users of the secure listener and their passwords."""
        self.secure_port = 0
        self.tls: TlsFiles | None = None
        self.requested_port = port
        self.requested_controller_port = controller_port
        self.jars = jars
        self.startup_timeout = startup_timeout
        self.port = 0
        self.controller_port = 0
        self.cluster_id = ""
        self.startup_seconds: float | None = None

    # -- public API

    @property
    def bootstrap(self) -> str:
        """Return ``127.0.0.1:PORT`` of the running broker (raises if it was never started)."""
        if not self.port:
            raise BrokerError("the broker is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def secure_bootstrap(self) -> str:
        """Return ``127.0.0.1:PORT`` of the SASL_SSL listener (a secure broker only)."""
        if not self.secure_port:
            raise BrokerError("the broker has no SASL_SSL listener (start it with secure=True)")
        return f"127.0.0.1:{self.secure_port}"

    @property
    def log_file(self) -> Path:
        """Return the path of the broker's log4j2 log (WARN and up; txn coordinator INFO)."""
        return self.in_workdir("broker.log")

    @property
    def console_file(self) -> Path:
        """Return the path where the JVM's stdout and stderr go."""
        return self.in_workdir("console.log")

    def start(self) -> Self:
        """Format a fresh log dir, start the JVM and return once the broker serves metadata.

        With automatic ports a start that lost its ports to another process is retried
        with new ones (up to three tries). Raises :class:`BrokerError` (with the tail of
        the broker's logs) on failure or after ``startup_timeout`` seconds; nothing is
        left running then.
        """
        if self.process is not None:
            raise BrokerError("the broker is already started")
        jars = fetch_jars(self.jars)
        java = java_executable()
        started = time.monotonic()

        def attempt() -> None:
            self.prepare(java, jars)
            self.launch(java, jars)
            self.wait_ready(started)

        self.retry_lost_port(attempt, tries=3 if self.requested_port == 0 else 1)
        self.startup_seconds = time.monotonic() - started
        logger.info("kafka broker at %s started in %.1f s", self.bootstrap, self.startup_seconds)
        return self

    def prepare(self, java: str, jars: Path) -> None:
        """Choose the ports, make a fresh work dir and format its KRaft log dir (no JVM yet)."""
        self._choose_ports()
        self.workdir = Path(tempfile.mkdtemp(prefix="choreo-kafka-"))
        self._check_ports_free()
        self._format(java, jars)

    def kill(self) -> None:
        """SIGKILL the JVM, as a crash would, and keep its data dir and ports for :meth:`restart`.

        Nothing is flushed or closed: whatever the broker had not written to its log
        segments is lost, exactly as in a power cut of the process.
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            raise BrokerError("the broker is not running")
        process.kill()
        process.wait()
        logger.info("kafka broker pid %d killed (SIGKILL)", process.pid)

    def restart(self, timeout: float | None = None) -> float:
        """Start the JVM again on the same data dir and ports; return the seconds it took.

        Call it from a thread that outlives the broker (see :func:`_server_process.child_preexec`).
        Raises :class:`BrokerError` when the broker still runs, was never started, or does
        not serve within ``timeout`` (default ``startup_timeout``) seconds.
        """
        if self.is_running():
            raise BrokerError("the broker is still running: kill() or stop() it first")
        if self.workdir is None or not (self.workdir / "server.properties").is_file():
            raise BrokerError("the broker was never started: there is no data dir to restart on")
        started = time.monotonic()
        jars = fetch_jars(self.jars)
        java = java_executable()
        self.launch(java, jars)
        saved, self.startup_timeout = self.startup_timeout, timeout or self.startup_timeout
        try:
            self.wait_ready(started)
        finally:
            self.startup_timeout = saved
        seconds = time.monotonic() - started
        logger.info("kafka broker at %s restarted in %.1f s", self.bootstrap, seconds)
        return seconds

    # -- steps

    def _choose_ports(self) -> None:
        """Set the broker and controller ports from the requested ones."""
        self.port = self.requested_port or free_port()
        if self.requested_controller_port is not None and self.requested_controller_port != 0:
            self.controller_port = self.requested_controller_port
        elif self.requested_port and self.requested_controller_port is None:
            self.controller_port = self.requested_port + 1
        else:
            self.controller_port = free_port()
            while self.controller_port == self.port:
                self.controller_port = free_port()
        if self.secure:
            self.secure_port = free_port()
            while self.secure_port in (self.port, self.controller_port):
                self.secure_port = free_port()

    def _check_ports_free(self) -> None:
        """Raise :class:`BrokerError` if the broker or controller port is already taken."""
        for name, port in (("broker", self.port), ("controller", self.controller_port)):
            if _port_in_use(port):
                raise BrokerError(f"{name} port 127.0.0.1:{port} is already in use")

    def _format(self, java: str, jars: Path) -> None:
        """Write server.properties and format the KRaft log dir with StorageTool."""
        assert self.workdir is not None
        config = self.server_properties()
        scram: list[str] = []
        if self.secure:
            self.tls = TlsFiles(self.workdir / "tls").make()
            secure = f"SASL_SSL://127.0.0.1:{self.secure_port}"
            config = (
                config.replace(
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},{secure},",
                )
                .replace(
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port},{secure}",
                )
                .replace(
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,",
                )
            )
            config += _secure_settings(self.secure_port, self.tls, self.users)
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                for name, password in self.users.items():
                    scram += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        (self.workdir / "server.properties").write_text(config)
        self.cluster_id = self.cluster_id or random_cluster_id()
        command = [
            java,
            *TOOL_JVM_OPTS,
            *self._log_opts(),
            "-cp",
            f"{jars}/*",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id,
            "--config",
            str(self.workdir / "server.properties"),
            *scram,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            raise BrokerError(
                f"kafka StorageTool format failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    def server_properties(self) -> str:
        """Return the text of this broker's ``server.properties`` (a single combined node)."""
        assert self.workdir is not None
        template = string.Template(SERVER_TEMPLATE.read_text())
        return template.substitute(
            broker_port=self.port,
            controller_port=self.controller_port,
            data_dir=str(self.workdir / "data"),
        )

    def _log_opts(self) -> list[str]:
        """Return the JVM options that send log4j2 output to ``broker.log`` at WARN."""
        return [
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dchoreo.kafka.log={self.log_file}",
        ]

    def launch(self, java: str, jars: Path) -> None:
        """Start ``kafka.Kafka`` in its own session, its console going to ``console.log``."""
        assert self.workdir is not None
        command = [
            java,
            *JVM_OPTS,
            *self._log_opts(),
            "-cp",
            f"{jars}/*",
            "kafka.Kafka",
            str(self.workdir / "server.properties"),
        ]
        self.spawn(command, self.console_file, append=True)

    def wait_ready(self, started: float) -> None:
        """Wait for the TCP port, then for a metadata answer; raise BrokerError on timeout."""
        deadline = started + self.startup_timeout
        port_open = False
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise BrokerError(
                    f"kafka broker exited with code {code} during start-up" + self.logs()
                )
            if not port_open:
                port_open = _tcp_open("127.0.0.1", self.port)
            if port_open and _served_cluster_id(self.bootstrap, 2.0) == self.cluster_id:
                return
            time.sleep(0.1)
        stage = "a metadata answer" if port_open else f"TCP port {self.port}"
        raise BrokerError(
            f"kafka broker did not serve within {self.startup_timeout:.0f} s (waiting for {stage})"
            + self.logs()
        )

    def logs(self, lines: int = 40) -> str:
        """Return the tails of the console and log4j logs, for error messages."""
        return (
            f"\n--- {self.console_file} (tail) ---\n{tail(self.console_file, lines)}"
            f"\n--- {self.log_file} (tail) ---\n{tail(self.log_file, lines)}"
        )


# --------------------------------------------------------------------------- CLI


def _cmd_fetch(args: argparse.Namespace) -> int:
    """Download the jars (if needed) and print where they are."""
    started = time.monotonic()
    target = fetch_jars(args.jars, quiet=not args.verbose)
    print(f"kafka {KAFKA_VERSION} jars ready in {target} ({time.monotonic() - started:.1f} s)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """Run a broker in the foreground until Ctrl-C or SIGTERM."""
    broker = KafkaBroker(
        port=args.port,
        controller_port=args.controller_port,
        jars=args.jars,
        startup_timeout=args.timeout,
        keep_dir=args.keep_dir,
        secure=args.secure,
    )

    def ready() -> list[str]:
        lines = [
            f"kafka {KAFKA_VERSION} broker ready: bootstrap {broker.bootstrap} "
            f"(controller 127.0.0.1:{broker.controller_port}, pid {broker.pid}, "
            f"started in {broker.startup_seconds:.1f} s, dir {broker.workdir})"
        ]
        if broker.tls is not None:
            lines.append(
                f"SASL_SSL on {broker.secure_bootstrap}: users {', '.join(broker.users)}"
                f" (SCRAM-SHA-256/512, PLAIN); CA {broker.tls.ca}, client certificate"
                f" {broker.tls.client_cert}, key {broker.tls.client_key}"
            )
        return lines

    return run_foreground(broker, ready)


def _cmd_cluster(args: argparse.Namespace) -> int:
    """Run a three-node cluster in the foreground (``scripts/kafka_cluster.py``)."""
    sys.modules.setdefault("kafka_broker", sys.modules[__name__])
    sys.path.insert(0, str(SCRIPTS_DIR))
    import kafka_cluster

    status: int = kafka_cluster.run_foreground(args.jars, args.timeout)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run the ``fetch`` or ``run`` command line and return its exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--jars",
        type=Path,
        default=None,
        help="jar cache directory (default: $CHOREO_KAFKA_JARS or ~/.cache/choreo/kafka-4.4.0)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download the broker's jars with Maven (once)")
    fetch.add_argument("-v", "--verbose", action="store_true", help="show Maven's output")
    fetch.set_defaults(func=_cmd_fetch)
    run = sub.add_parser("run", help="run a broker in the foreground (Ctrl-C stops it)")
    run.add_argument("--port", type=int, default=DEFAULT_PORT, help="broker port; 0 = free ports")
    run.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help=f"controller port (default {DEFAULT_CONTROLLER_PORT}, i.e. port+1; free if --port 0)",
    )
    run.add_argument("--timeout", type=float, default=60.0, help="start-up timeout in seconds")
    run.add_argument("--keep-dir", action="store_true", help="keep the temp dir after stopping")
    run.add_argument(
        "--secure",
        action="store_true",
        help="add a SASL_SSL listener (SCRAM/PLAIN users, TLS certificates made with openssl)",
    )
    run.set_defaults(func=_cmd_run)
    cluster = sub.add_parser(
        "cluster",
        help="run a three-node KRaft cluster (replication 3, min.insync.replicas=2) in the "
        "foreground",
    )
    cluster.add_argument("--timeout", type=float, default=90.0, help="start-up timeout, seconds")
    cluster.set_defaults(func=_cmd_cluster)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        status: int = args.func(args)
    except BrokerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
