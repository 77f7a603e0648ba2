"""docker-compose.yml and the Dockerfile agree with the settings (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from statekeeper.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_kafka_redis_and_worker() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "redis", "worker"}
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["worker"]["build"] == "."


def test_worker_environment_names_real_settings() -> None:
    environment = compose()["services"]["worker"]["environment"]
    fields = {f"STATEKEEPER_{name.upper()}" for name in Settings.model_fields}
    assert set(environment) <= fields
    kafka_host = environment["STATEKEEPER_KAFKA_BOOTSTRAP"].split(":")[0]
    redis_host = environment["STATEKEEPER_REDIS_URL"].split("//")[1].split(":")[0]
    assert {kafka_host, redis_host} <= set(compose()["services"])


def test_worker_port_is_published_and_matches_settings() -> None:
    worker = compose()["services"]["worker"]
    port = worker["environment"]["STATEKEEPER_WEB_PORT"]
    assert f"{port}:{port}" in worker["ports"]
    assert int(port) == Settings().web_port


def test_compose_advertises_the_listener_the_worker_uses() -> None:
    services = compose()["services"]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert services["worker"]["environment"]["STATEKEEPER_KAFKA_BOOTSTRAP"] in advertised


def test_dockerfile_runs_the_worker_entry_point() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["statekeeper", "worker"]' in text
    assert "FROM python:3.11" in text
    assert "STATEKEEPER_WEB_HOST=0.0.0.0" in text


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"STATEKEEPER_{name.upper()}"
        for name in Settings.model_fields
        if f"`STATEKEEPER_{name.upper()}`" not in readme
    ]
    assert missing == []


def test_readme_quick_start_is_the_two_make_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick_start.strip().splitlines()]
    assert commands == ["make run", "make test"]
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
