"""Fixtures and checks shared by the system tests (faults and hostile input).

The broker, Redis and per-test deployments are the integration suite's fixtures, imported
here; the checks compare real workers with :class:`tests.support.mixed_model.MixedModel`.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgpack
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.conftest import (  # noqa: F401  (fixtures, re-exported for pytest)
    ACME_KEY,
    Deployment,
    deployment,
    infra,
    run_id,
)
from tests.integration.test_workflow_model import assert_matches_model
from tests.support.kafka import envelope, send_envelopes
from tests.support.mixed_model import MixedModel, MixedStream, notice_identity
from tests.support.model import REWORK
from tests.support.worker import WorkerProcess, http_get

INPUT_TOPICS = ("workflow.events", "session.events", "conversation.events", "lifecycle.events")


async def define_rework(bootstrap: str, dep: Deployment) -> None:
    """The workflow every mixed stream uses."""
    await send_envelopes(
        bootstrap,
        dep.topic("workflow.definitions"),
        [envelope("workflow.define", "invoice", REWORK)],
    )


async def send_mixed(bootstrap: str, dep: Deployment, stream: MixedStream) -> None:
    """Produce the stream under contract keys, in order, and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        pending = [
            await producer.send(
                dep.topic(suffix),
                key=f"{event['tenant']}/{event['key']}".encode(),
                value=msgpack.packb(event, use_bin_type=True),
            )
            for suffix, event in stream.events
        ]
        for delivery in pending:
            await delivery
    finally:
        await producer.stop()


async def committed_behind(bootstrap: str, dep: Deployment, group: str) -> int:
    """Input records not yet committed by the consumer group (0: everything handled)."""
    topics = [dep.topic(t) for t in INPUT_TOPICS]
    partitions = await partitions_of(bootstrap, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        ends = await consumer.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(group)
        # every input but definitions takes the batched path: offsets under its own group
        for batched in ("workflow", "session", "lifecycle", "conversation"):
            committed.update(await admin.list_consumer_group_offsets(f"{group}-{batched}"))
    finally:
        await consumer.stop()
        await admin.close()
    assert ends, f"no partitions of {topics}"
    done = {tp: meta.offset for tp, meta in committed.items()}
    return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())


async def wait_committed(bootstrap: str, dep: Deployment, timeout: float = 240) -> None:
    """Poll until the app's consumer group has committed the end of every input topic."""
    group = dep.env["STATEKEEPER_APP_ID"]
    deadline = time.monotonic() + timeout
    behind = -1
    while time.monotonic() < deadline:
        behind = await committed_behind(bootstrap, dep, group)
        if behind == 0:
            return
        time.sleep(1.0)
    raise TimeoutError(f"{behind} input records still uncommitted after {timeout}s")


async def partitions_of(bootstrap: str, topics: list[str]) -> list[TopicPartition]:
    """Every partition of ``topics``, from the broker's metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]


async def read_raw(bootstrap: str, topic: str, timeout: float = 6.0) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of ``topic`` up to its current end, raw bytes."""
    partitions = await partitions_of(bootstrap, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    found: list[tuple[bytes, bytes]] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout + sum(ends.values()) / 5_000
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in partitions]
            if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                return found
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                found += [(r.key or b"", r.value or b"") for r in records]
    finally:
        await consumer.stop()
    raise TimeoutError(f"{topic} not read to its end in time")


def assert_repeats_identical(records: list[tuple[bytes, bytes]], identity: Any) -> dict[Any, int]:
    """Group records by ``identity(decoded)``; every repeat must be the same bytes."""
    first: dict[Any, bytes] = {}
    seen: dict[Any, int] = defaultdict(int)
    for _, raw in records:
        ident = identity(msgpack.unpackb(raw))
        assert first.setdefault(ident, raw) == raw, f"a repeat of {ident} differs"
        seen[ident] += 1
    return dict(seen)


async def check_outputs(bootstrap: str, dep: Deployment, model: MixedModel) -> dict[str, int]:
    """Status records and notices against the model; returns counts for the report."""
    statuses = await read_raw(bootstrap, dep.topic("workflow.status"))
    seen = assert_repeats_identical(statuses, lambda r: (r["tenant"], r["key"], r["version"]))
    wanted = {
        (model.tenant, key, v)
        for key, item in model.workflows.items.items()
        for v in range(1, item.version + 1)
    }
    assert set(seen) == wanted, "a status record is missing or unexpected"
    notices = await read_raw(bootstrap, dep.topic("lifecycle.notices"))
    noticed = assert_repeats_identical(notices, notice_identity)
    assert set(noticed) == model.notices, (
        f"missing {sorted(model.notices - set(noticed))[:5]}, "
        f"unexpected {sorted(set(noticed) - model.notices)[:5]}"
    )
    return {
        "status_records": len(statuses),
        "status_repeats": len(statuses) - len(seen),
        "notices": len(notices),
        "notice_repeats": len(notices) - len(noticed),
    }


async def wait_notices(bootstrap: str, dep: Deployment, model: MixedModel) -> None:
    """Expiries are tick-driven: poll until every expected notice identity is there."""
    deadline = time.monotonic() + 60
    while True:
        notices = await read_raw(bootstrap, dep.topic("lifecycle.notices"))
        got = {notice_identity(msgpack.unpackb(raw)) for _, raw in notices}
        if model.notices <= got or time.monotonic() > deadline:
            return
        time.sleep(1.0)


def check_state(url: str, model: MixedModel, api_key: str = ACME_KEY) -> int:
    """Every entity of the model over HTTP; returns how many entities were compared."""
    assert_matches_model(url, model.workflows)
    for key, session in model.sessions.items():
        body = _get(url, f"/v1/sessions/{quote(key)}", api_key)
        got = (body["user"], body["step"], body["steps_done"], body["data"], body["version"])
        assert got == (session.user, session.step, session.steps_done, session.data,
                       session.version), key  # fmt: skip
    for key, resource in model.resources.items():
        body = _get(url, f"/v1/resources/{quote(key)}", api_key)
        got = (body["kind"], body["size_bytes"], body["meta"], body["version"])
        assert got == (resource.kind, resource.size_bytes, resource.meta, resource.version), key
    for key in (*model.closed_sessions, *model.ended_resources):
        path = "sessions" if key.startswith("sess-") else "resources"
        status, _, _ = http_get(f"{url}/v1/{path}/{quote(key)}", api_key)
        assert status == 404, key
    for user, messages in model.messages.items():
        status, _, body = http_get(
            f"{url}/v1/conversations/{quote(user)}/messages?limit=500", api_key
        )
        got = [] if status == 404 else [
            {k: m[k] for k in ("id", "conversation", "role", "content")} for m in body["messages"]
        ]  # fmt: skip
        assert status in (200, 404), (user, status, body)
        assert got == messages, user
    return (
        len(model.workflows.items) + len(model.sessions) + len(model.resources)
        + len(model.closed_sessions) + len(model.ended_resources) + len(model.messages)
    )  # fmt: skip


def _get(url: str, path: str, api_key: str) -> Any:
    status, _, body = http_get(f"{url}{path}", api_key)
    assert status == 200, (path, status, body)
    return body


def progress(worker: WorkerProcess) -> int:
    """Events this worker process applied or dead-lettered since it started."""
    status, _, text = http_get(f"{worker.url}/metrics")
    if status != 200:
        return 0
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith(("statekeeper_events_applied_total", "statekeeper_events_deadlettered"))
    )


FIGURES = Path("var/system-figures.json")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """What a test injected and saw, appended to var/system-figures.json for the README."""
    found: dict[str, Any] = {}
    yield found
    if found:
        FIGURES.parent.mkdir(exist_ok=True)
        previous = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        previous[request.node.name] = {**found, "at": time.strftime("%Y-%m-%d %H:%M")}
        FIGURES.write_text(json.dumps(previous, indent=1, sort_keys=True) + "\n")


def start_worker(dep: Deployment, name: str = "w0", **overrides: str) -> WorkerProcess:
    """Start a worker and wait for /readyz, patiently: a loaded broker creates topics slowly."""
    return dep.start(name, ready=False, **overrides).wait_ready(timeout=240)
