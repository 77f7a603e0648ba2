"""Random streams against an independent reference model, with two workers and crashes."""

from __future__ import annotations

import random
import shutil
from collections import Counter
from typing import Any

import pytest

from tests.integration.conftest import ACME_KEY, Deployment
from tests.support.kafka import envelope, read_topic, send_envelopes
from tests.support.model import REWORK, ReferenceModel, random_stream
from tests.support.worker import WorkerProcess, http_get, wait_for

pytestmark = pytest.mark.integration


async def define(deployment: Deployment) -> None:
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.definitions"),
        [envelope("workflow.define", "invoice", REWORK)],
    )


def model_of(stream: list[dict[str, Any]]) -> ReferenceModel:
    model = ReferenceModel(REWORK)
    for event in stream:
        model.apply(event)
    return model


def listed_items(url: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        query = "limit=500" + (f"&cursor={cursor}" if cursor else "")
        status, _, page = http_get(f"{url}/v1/workflows?{query}", ACME_KEY)
        assert status == 200, page
        for item in page["items"]:
            assert item["key"] not in found, "an item was listed twice"
            found[item["key"]] = item
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def wait_until_applied(url: str, model: ReferenceModel, timeout: float = 90) -> None:
    want = sum(item.version for item in model.items.values())

    def done() -> bool:
        status, _, body = http_get(f"{url}/v1/workflows", ACME_KEY)
        if status != 200:
            return False
        items = listed_items(url)
        return len(items) == len(model.items) and sum(i["version"] for i in items.values()) == want

    wait_for(done, timeout=timeout, interval=0.5)


def assert_matches_model(url: str, model: ReferenceModel) -> None:
    items = listed_items(url)
    assert set(items) == set(model.items)
    for key, expected in model.items.items():
        got = items[key]
        assert (got["state"], got["condition"], got["version"], got["attempt"], got["attrs"]) == (
            expected.state, expected.condition, expected.version, expected.attempt, expected.attrs,
        ), key  # fmt: skip
        status, _, body = http_get(f"{url}/v1/workflows/{key}/history", ACME_KEY)
        assert status == 200
        steps = [(h["from"], h["to"], h["condition"], h["version"]) for h in body["history"]]
        assert steps == expected.history, key
    status, _, counts = http_get(f"{url}/v1/workflows/counts?workflow=invoice", ACME_KEY)
    assert status == 200
    assert counts["invoice"] == model.counts()


async def test_random_stream_matches_reference_model(deployment: Deployment) -> None:
    rng = random.Random(20261124)
    stream = random_stream(rng, items=150)
    model = model_of(stream)
    worker = deployment.start()
    await define(deployment)

    await send_envelopes(deployment.bootstrap, deployment.topic("workflow.events"), stream)

    wait_until_applied(worker.url, model)
    assert_matches_model(worker.url, model)
    applied = sum(len(i.history) for i in model.items.values())
    statuses = await read_topic(
        deployment.bootstrap, deployment.topic("workflow.status"), until=applied + 1, timeout=10
    )
    assert len(statuses) == applied  # one per applied change, none for duplicates or rejections
    per_item: dict[str, list[int]] = {}
    for _, record in statuses:
        per_item.setdefault(record["key"], []).append(record["version"])
    assert all(versions == sorted(versions) for versions in per_item.values())
    letters = await read_topic(
        deployment.bootstrap,
        deployment.topic("deadletter"),
        until=len(model.rejections) + 1,
        timeout=10,
    )
    # Every record not applied is dead-lettered, a redelivered rejected one included.
    reasons = Counter((letter["event"]["id"], letter["reason"]) for _, letter in letters)
    assert reasons == Counter(model.rejections)
    assert len(stream) > 1500
    assert Counter(reason for _, reason in model.rejections)["illegal_transition"] > 50


async def test_two_workers_answer_for_all_partitions(deployment: Deployment) -> None:
    rng = random.Random(7)
    stream = random_stream(rng, items=60)
    model = model_of(stream)
    first = deployment.start("w0")
    second = deployment.start("w1")
    await define(deployment)

    await send_envelopes(deployment.bootstrap, deployment.topic("workflow.events"), stream)

    wait_until_applied(first.url, model)
    for worker in (first, second):
        assert_matches_model(worker.url, model)
    owners = {
        http_get(f"{first.url}/v1/workflows/{key}", ACME_KEY)[1]["X-Statekeeper-Owner"]
        for key in model.items
    }
    assert owners == {first.url, second.url}


async def test_sigkill_mid_run_loses_nothing_and_doubles_nothing(deployment: Deployment) -> None:
    rng = random.Random(99)
    stream = random_stream(rng, items=300)
    model = model_of(stream)
    worker = deployment.start()  # creates the topics
    await define(deployment)
    worker.stop()
    await send_envelopes(deployment.bootstrap, deployment.topic("workflow.events"), stream)
    worker = deployment.start()
    for _ in range(2):  # crash twice while it works through the backlog
        # Kill as soon as the worker has applied something: a fixed sleep lands before the
        # first record on a slow machine and after the last on a fast one.
        wait_for(lambda w=worker: _progress(w) > 0, timeout=60, interval=0.02)
        assert _progress(worker) < len(stream), "the crash must land mid-run"
        worker.kill()
        worker = deployment.start()

    wait_until_applied(worker.url, model)
    assert_matches_model(worker.url, model)
    applied = {(k, v) for k, item in model.items.items() for v in range(1, item.version + 1)}
    statuses = await read_topic(
        deployment.bootstrap, deployment.topic("workflow.status"), until=10**6, timeout=8
    )
    seen = Counter((record["key"], record["version"]) for _, record in statuses)
    assert set(seen) == applied  # at least once each; a replayed change may repeat
    first_records: dict[tuple[str, int], dict[str, Any]] = {}
    for _, record in statuses:
        first = first_records.setdefault((record["key"], record["version"]), record)
        assert record == first  # a repeat is the same record, byte for byte after decoding

    worker.stop()
    shutil.rmtree(deployment.root / "w0")  # rebuilt from the changelogs alone
    worker = deployment.start()
    assert_matches_model(worker.url, model)


def _progress(worker: WorkerProcess) -> int:
    status, _, text = http_get(f"{worker.url}/metrics")
    if status != 200:
        return 0
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith(("statekeeper_events_applied_total", "statekeeper_events_deadlettered"))
    )
