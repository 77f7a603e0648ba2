"""Local infrastructure: config, checks and messages that need no running broker."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from statekeeper.exceptions import InfraError
from statekeeper.infra import kafka, redis
from statekeeper.infra.process import port_open, read_pid
from statekeeper.settings import Settings


@pytest.fixture
def listener() -> Iterator[int]:
    """A real socket that accepts connections but speaks neither Kafka nor Redis."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_config_is_single_node_kraft_on_loopback(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, local_kafka_port=19999, local_kafka_controller_port=19998)
    text = kafka.render_config(settings, kafka.paths_for(settings))
    values = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    assert values["process.roles"] == "broker,controller"
    assert values["listeners"] == "PLAINTEXT://127.0.0.1:19999,CONTROLLER://127.0.0.1:19998"
    assert values["offsets.topic.replication.factor"] == "1"
    assert values["group.initial.rebalance.delay.ms"] == "0"
    assert values["log.dirs"] == str(tmp_path.resolve() / "kafka" / "data")


def test_missing_java_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InfraError, match="java not found.*openjdk-17"):
        kafka.check_java()


def test_missing_mvn_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    settings = Settings(var_dir=tmp_path)
    with pytest.raises(InfraError, match="mvn not found.*apt-get install -y maven"):
        kafka.ensure_jars(settings, kafka.paths_for(settings), print)


def test_port_taken_by_something_else(listener: int, tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, local_kafka_port=listener)
    assert port_open("127.0.0.1", listener)
    assert not kafka.speaks_kafka("127.0.0.1", listener, timeout=0.5)
    with pytest.raises(InfraError, match=f"port {listener} is taken"):
        kafka.ensure_running(settings, say=lambda _: None)


def test_redis_port_taken_by_something_else(listener: int, tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, local_redis_port=listener)
    with pytest.raises(InfraError, match=f"port {listener} is taken"):
        redis.ensure_running(settings, say=lambda _: None)


def test_configured_redis_that_does_not_answer(listener: int) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{listener}/0")
    with pytest.raises(InfraError, match="does not answer PING"):
        redis.ensure_running(settings, say=lambda _: None)


def test_stale_pid_file_is_not_ours(tmp_path: Path) -> None:
    pid_file = tmp_path / "broker.pid"
    pid_file.write_text("1\n")  # pid 1 is alive but is not a Kafka broker
    assert read_pid(pid_file, kafka.PID_MARKER) is None
    pid_file.write_text("not a pid")
    assert read_pid(pid_file, kafka.PID_MARKER) is None


def test_down_without_anything_started_stops_nothing(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    assert "nothing of ours" in kafka.stop(settings)
    assert "nothing of ours" in redis.stop(settings)


@pytest.mark.parametrize(("heap", "minimum"), [("512m", "256m"), ("128m", "128m"), ("2g", "256m")])
def test_min_heap(heap: str, minimum: str) -> None:
    assert kafka.min_heap(heap) == minimum


def test_bad_heap_is_a_clear_error() -> None:
    with pytest.raises(InfraError, match="STATEKEEPER_KAFKA_HEAP"):
        kafka.min_heap("lots")
