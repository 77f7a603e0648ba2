"""A local single-node Apache Kafka broker (KRaft), fetched with Maven and run with java.

There is no Docker engine on our machines, so ``statekeeper infra up`` builds the broker from
Maven Central jars (``pom.xml`` beside this file), formats KRaft storage once and starts
``kafka.Kafka`` on loopback. Everything lives under ``<var_dir>/kafka``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statekeeper.exceptions import InfraError
from statekeeper.infra.process import port_open, read_pid, spawn, tail, terminate
from statekeeper.settings import LOCAL_KAFKA_HOST, Settings

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
MIN_JAVA = 17
START_TIMEOUT_S = 90.0
PID_MARKER = "kafka.Kafka"


@dataclass(frozen=True)
class KafkaPaths:
    """Where the local broker keeps its jars, config, data, log and pid."""

    root: Path
    version: str

    @property
    def libs(self) -> Path:
        return self.root / f"libs-{self.version}"

    @property
    def libs_complete(self) -> Path:
        return self.libs / ".complete"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def log(self) -> Path:
        return self.root / "broker.log"

    @property
    def pid(self) -> Path:
        return self.root / "broker.pid"


def paths_for(settings: Settings) -> KafkaPaths:
    return KafkaPaths(root=settings.var_dir.resolve() / "kafka", version=settings.kafka_version)


def ensure_running(settings: Settings, say: Any = logger.info) -> str:
    """Make sure a broker answers at the configured bootstrap; start ours if needed.

    Returns the bootstrap servers. An external broker (``STATEKEEPER_KAFKA_BOOTSTRAP``) is
    only checked, never started.
    """
    if not settings.uses_local_kafka:
        say(f"kafka: using {settings.bootstrap_servers} (STATEKEEPER_KAFKA_BOOTSTRAP)")
        return settings.bootstrap_servers
    port = settings.local_kafka_port
    paths = paths_for(settings)
    bootstrap = f"{LOCAL_KAFKA_HOST}:{port}"
    if port_open(LOCAL_KAFKA_HOST, port):
        return _reuse(paths, port, bootstrap, say)
    if port_open(LOCAL_KAFKA_HOST, settings.local_kafka_controller_port):
        raise InfraError(
            f"controller port {settings.local_kafka_controller_port} is taken by another "
            "program; set STATEKEEPER_LOCAL_KAFKA_CONTROLLER_PORT"
        )
    java = check_java()
    ensure_jars(settings, paths, say)
    paths.config.write_text(render_config(settings, paths))
    format_storage(java, paths, say)
    started = time.monotonic()
    process = _start(java, settings, paths)
    wait_ready(bootstrap, paths, say, process)
    say(
        f"kafka: started {bootstrap} ({settings.kafka_version}) in "
        f"{time.monotonic() - started:.1f}s, data in {paths.root}"
    )
    return bootstrap


def _reuse(paths: KafkaPaths, port: int, bootstrap: str, say: Any) -> str:
    if speaks_kafka(LOCAL_KAFKA_HOST, port):
        wait_ready(bootstrap, paths, say)
        pid = read_pid(paths.pid, PID_MARKER)
        whose = f"already running (pid {pid})" if pid else "reusing the broker already on"
        say(f"kafka: {whose} {bootstrap}")
        return bootstrap
    raise InfraError(
        f"port {port} is taken by a program that is not Kafka; set "
        "STATEKEEPER_LOCAL_KAFKA_PORT to a free port or STATEKEEPER_KAFKA_BOOTSTRAP to a broker"
    )


def check_java() -> str:
    """Path of a Java >= 17 runtime, or InfraError naming what to install."""
    java = shutil.which("java")
    if java is None:
        raise InfraError(
            "java not found: the local Kafka broker needs Java 17+ "
            "(apt-get install -y openjdk-17-jre-headless), or set STATEKEEPER_KAFKA_BOOTSTRAP"
        )
    version = java_major_version(java)
    if version is None or version < MIN_JAVA:
        raise InfraError(f"{java} is Java {version}; Kafka 4 needs Java {MIN_JAVA}+")
    return java


def java_major_version(java: str) -> int | None:
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def ensure_jars(settings: Settings, paths: KafkaPaths, say: Any) -> None:
    """Copy the broker's jars from Maven Central once; later starts download nothing."""
    if paths.libs_complete.exists():
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError(
            "mvn not found: it fetches the Kafka broker jars (apt-get install -y maven), "
            "or set STATEKEEPER_KAFKA_BOOTSTRAP to an existing broker"
        )
    say(f"kafka: fetching broker jars {settings.kafka_version} with mvn (first run, ~45 MB)…")
    paths.libs.mkdir(parents=True, exist_ok=True)
    command = [
        mvn, "-q", "-B", "-f", str(HERE / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={paths.libs}",
        f"-Dkafka.version={settings.kafka_version}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    jars = list(paths.libs.glob("kafka_2.13-*.jar"))
    if result.returncode != 0 or not jars:
        output = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise InfraError("mvn could not fetch the Kafka jars:\n" + "\n".join(output))
    paths.libs_complete.write_text(f"{len(list(paths.libs.glob('*.jar')))} jars\n")


def render_config(settings: Settings, paths: KafkaPaths) -> str:
    """server.properties for one node that is both broker and controller, on loopback."""
    port, ctrl = settings.local_kafka_port, settings.local_kafka_controller_port
    host = LOCAL_KAFKA_HOST
    values = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{ctrl}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctrl}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(paths.data),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "2000",
        "log.retention.check.interval.ms": "30000",
    }
    lines = ["# Written by `statekeeper infra up`; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def format_storage(java: str, paths: KafkaPaths, say: Any) -> None:
    """Format KRaft storage once (skipped when ``meta.properties`` exists)."""
    if (paths.data / "meta.properties").exists():
        return
    classpath = f"{paths.libs}/*"
    tool = [java, "-cp", classpath, "kafka.tools.StorageTool"]
    uuid_run = subprocess.run([*tool, "random-uuid"], capture_output=True, text=True, check=False)
    cluster_id = uuid_run.stdout.strip().splitlines()[-1] if uuid_run.stdout.strip() else ""
    if uuid_run.returncode != 0 or not cluster_id:
        raise InfraError(f"kafka StorageTool random-uuid failed: {uuid_run.stderr[-500:]}")
    result = subprocess.run(
        [*tool, "format", "-t", cluster_id, "-c", str(paths.config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise InfraError(f"formatting Kafka storage failed: {result.stdout[-500:]}")
    say(f"kafka: formatted storage in {paths.data} (cluster {cluster_id})")


def _start(java: str, settings: Settings, paths: KafkaPaths) -> subprocess.Popen[bytes]:
    heap = settings.kafka_heap
    command = [
        java,
        f"-Xmx{heap}",
        f"-Xms{min_heap(heap)}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}",
        "-cp",
        f"{paths.libs}/*",
        "kafka.Kafka",
        str(paths.config),
    ]
    return spawn(command, paths.log, paths.pid)


def min_heap(heap: str) -> str:
    """The smaller of ``heap`` and 256m, in the JVM's size syntax."""
    match = re.fullmatch(r"(\d+)([kmgKMG]?)", heap)
    if match is None:
        raise InfraError(f"STATEKEEPER_KAFKA_HEAP={heap!r} is not a JVM size like 512m")
    scale = {"": 1 / 2**20, "k": 1 / 1024, "m": 1, "g": 1024}[match.group(2).lower()]
    return f"{min(int(int(match.group(1)) * scale), 256)}m"


def wait_ready(
    bootstrap: str, paths: KafkaPaths, say: Any, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until the broker serves metadata; fail with its log if it dies first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    next_note = time.monotonic() + 5
    host, port = bootstrap.rsplit(":", 1)
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise InfraError(
                f"the Kafka broker exited; last lines of {paths.log}:\n" + tail(paths.log)
            )
        if speaks_kafka(host, int(port)) and metadata_ready(bootstrap):
            return
        if time.monotonic() > next_note:
            say("kafka: waiting for the broker…")
            next_note += 5
        time.sleep(0.3)
    raise InfraError(f"Kafka did not answer within {START_TIMEOUT_S:.0f}s; see {paths.log}")


def speaks_kafka(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when ``host:port`` answers a Kafka ApiVersions request (v0)."""
    client_id = b"statekeeper-probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 8)
    except OSError:
        return False
    if header is None:
        return False
    _size, correlation_id = struct.unpack(">ii", header)
    return correlation_id == 7


def _recv_exact(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def metadata_ready(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when the broker lists topics (it is up and unfenced)."""
    result: list[bool] = []

    async def probe() -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await asyncio.wait_for(admin.start(), timeout)
            await asyncio.wait_for(admin.list_topics(), timeout)
            result.append(True)
        except Exception:  # any failure means "not yet"
            result.append(False)
        finally:
            await admin.close()

    # A thread of its own, so this works whether or not the caller runs an event loop.
    thread = threading.Thread(target=lambda: asyncio.run(probe()), daemon=True)
    thread.start()
    thread.join(timeout * 3)
    return bool(result and result[0])


def stop(settings: Settings, wipe: bool = False) -> str:
    """Stop the broker we started (never another one); ``wipe`` also deletes its data."""
    paths = paths_for(settings)
    pid = read_pid(paths.pid, PID_MARKER)
    if pid is not None:
        terminate(pid, timeout=30)
    paths.pid.unlink(missing_ok=True)
    if wipe:
        shutil.rmtree(paths.data, ignore_errors=True)
    stopped = f"stopped (pid {pid})" if pid else "not running (nothing of ours to stop)"
    return f"kafka: {stopped}" + (", data wiped" if wipe else "")


def status(settings: Settings) -> str:
    if not settings.uses_local_kafka:
        reachable = "reachable" if metadata_ready(settings.bootstrap_servers) else "UNREACHABLE"
        return f"kafka: external {settings.bootstrap_servers}, {reachable}"
    paths = paths_for(settings)
    pid = read_pid(paths.pid, PID_MARKER)
    bootstrap = settings.bootstrap_servers
    if pid is not None:
        return f"kafka: running {bootstrap} (pid {pid}, {settings.kafka_version})"
    if speaks_kafka(LOCAL_KAFKA_HOST, settings.local_kafka_port):
        return f"kafka: reachable {bootstrap} (not started by us)"
    return f"kafka: stopped ({bootstrap})"
