"""Real Kafka and Redis, brought up once per test session; real worker processes per test."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from statekeeper.infra import kafka, redis
from statekeeper.settings import Settings
from tests.support.kafka import delete_topics_starting_with
from tests.support.worker import WorkerProcess

ACME_KEY = "acme-key-0123456789abcdef"
GLOBEX_KEY = "globex-key-0123456789abcdef"
_counter = itertools.count()


@dataclass(frozen=True)
class Infra:
    bootstrap: str
    redis_url: str


@pytest.fixture(scope="session")
def infra() -> Infra:
    """The local broker and Redis (started if needed), or the ones the env points at."""
    settings = Settings()
    bootstrap = kafka.ensure_running(settings)
    redis_url = redis.ensure_running(settings)
    return Infra(bootstrap=bootstrap, redis_url=redis_url)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class Deployment:
    """One isolated statekeeper deployment: its own topics, app id and workers."""

    infra: Infra
    prefix: str
    env: dict[str, str]
    root: Path
    start: Callable[..., WorkerProcess]

    @property
    def bootstrap(self) -> str:
        return self.infra.bootstrap

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}statekeeper.{suffix}"


@pytest.fixture
def deployment(infra: Infra, run_id: str, tmp_path: Path) -> Iterator[Deployment]:
    """A fresh topic prefix and app id per test, so tests never see each other's data."""
    n = next(_counter)
    prefix = f"t{run_id}n{n}."
    env = {
        "STATEKEEPER_KAFKA_BOOTSTRAP": infra.bootstrap,
        "STATEKEEPER_REDIS_URL": infra.redis_url,
        "STATEKEEPER_TOPIC_PREFIX": prefix,
        "STATEKEEPER_APP_ID": f"sk-{run_id}-{n}",
        "STATEKEEPER_API_KEYS": f"acme:{ACME_KEY},globex:{GLOBEX_KEY}",
        "STATEKEEPER_PARTITIONS": "4",
        "STATEKEEPER_TABLE_STANDBY_REPLICAS": "0",
        "STATEKEEPER_SESSION_TIMEOUT_S": "6",
        "STATEKEEPER_MAX_EVENT_BYTES": "65536",
        "STATEKEEPER_VAR_DIR": str(tmp_path / "var"),
        "STATEKEEPER_LOG_LEVEL": "info",
    }
    workers: list[WorkerProcess] = []

    def start(name: str = "w0", ready: bool = True, **overrides: str) -> WorkerProcess:
        data_dir = tmp_path / name
        worker = WorkerProcess(
            env={**env, "STATEKEEPER_DATA_DIR": str(data_dir), **overrides},
            log_path=tmp_path / f"{name}.log",
        )
        workers.append(worker)
        worker.start()
        return worker.wait_ready() if ready else worker

    yield Deployment(infra=infra, prefix=prefix, env=env, root=tmp_path, start=start)
    for worker in workers:
        worker.kill()
    delete_topics_starting_with(infra.bootstrap, prefix, env["STATEKEEPER_APP_ID"])
