"""Shared pieces of the benchmarks: infrastructure, isolated deployments, load shapes."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from aiokafka import AIOKafkaConsumer, TopicPartition

from statekeeper.infra import kafka, redis
from statekeeper.settings import Settings
from tests.support.kafka import delete_topics_starting_with, envelope
from tests.support.worker import WorkerProcess

RESULTS = Path(__file__).parent / "results"
API_KEY = "bench-key-0123456789abcdef"


def speed_probe_ms() -> float:
    """Milliseconds for a fixed piece of pure-Python work (best of three).

    The development VM's speed varies by up to about 3x between hours, steal time or
    not, so every result records this beside the CPU's name: figures from runs with
    different probe times do not compare; ratios measured in the same run do.
    """
    best = float("inf")
    for _ in range(3):
        began = time.process_time()
        table: dict[int, tuple[int, int]] = {}
        for n in range(300_000):
            table[n & 1023] = (n, n * 3)
        best = min(best, time.process_time() - began)
    return round(best * 1000, 1)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "speed_probe_ms": speed_probe_ms(),
        "kafka": Settings().kafka_version,
        "broker": "local single-node KRaft on the same machine",
    }


def bring_up() -> tuple[str, str]:
    settings = Settings()
    return kafka.ensure_running(settings), redis.ensure_running(settings)


@dataclass
class Deployment:
    """A fresh prefix/app id and its worker processes, like the integration tests."""

    bootstrap: str
    redis_url: str
    root: Path
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"b{self.run}."

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}statekeeper.{suffix}"

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            "STATEKEEPER_KAFKA_BOOTSTRAP": self.bootstrap,
            "STATEKEEPER_REDIS_URL": self.redis_url,
            "STATEKEEPER_TOPIC_PREFIX": self.prefix,
            "STATEKEEPER_APP_ID": f"bench-{self.run}",
            "STATEKEEPER_API_KEYS": f"acme:{API_KEY}",
            "STATEKEEPER_PARTITIONS": "8",
            "STATEKEEPER_TABLE_STANDBY_REPLICAS": "0",
            "STATEKEEPER_VAR_DIR": str(self.root / "var"),
            "STATEKEEPER_LOG_LEVEL": "warning",
            **overrides,
        }

    def start(self, name: str = "w0", **overrides: str) -> WorkerProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        worker = WorkerProcess(
            env={**self.env(**overrides), "STATEKEEPER_DATA_DIR": str(self.root / name)},
            log_path=self.root / f"{name}.log",
        )
        self.workers.append(worker)
        return worker.start().wait_ready(timeout=120)

    def close(self) -> None:
        """Kill the workers and delete the run's topics (left behind they slow the broker)."""
        for worker in self.workers:
            worker.kill()
        delete_topics_starting_with(self.bootstrap, self.prefix, f"bench-{self.run}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RecordCounter:
    """Records in a topic (sum of its end offsets), asked through one client.

    A client per question cost a connection and the metadata of every topic each time: the
    broker's and this process's CPU, on the two cores the process under test shares.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]

    async def __aenter__(self) -> RecordCounter:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def count(self) -> int:
        ends = await self.consumer.end_offsets(self.partitions)
        return sum(ends.values())


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n")
    return path


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def monotonic() -> float:
    return time.monotonic()


def packed_envelope(kind: str, key: str, data: dict[str, Any], tenant: str = "acme") -> bytes:
    """One msgpack envelope of the contract, stamped now, with a fresh id."""
    return msgpack.packb(envelope(kind, key, data, tenant=tenant), use_bin_type=True)
