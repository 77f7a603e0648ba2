"""Lifecycle management end to end: resources over Kafka, expiry, retention, accounting."""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from aiokafka import AIOKafkaConsumer

from tests.integration.conftest import ACME_KEY, GLOBEX_KEY, Deployment
from tests.integration.test_workflow_slice import INVOICE, define_invoice, item_when
from tests.support.kafka import envelope, read_topic, send_envelopes
from tests.support.worker import WorkerProcess, http_get, wait_for

pytestmark = pytest.mark.integration

PRECISION_MS = 2_000  # the bound: an expiry lands within 2 s of its deadline


@dataclass(frozen=True)
class Notice:
    key: bytes
    body: dict[str, Any]
    produced_at: int  # Kafka record timestamp (ms): when the worker sent it


async def read_notices(dep: Deployment, *, until: int, timeout: float) -> list[Notice]:
    """Every notice on the topic so far (reading until ``until`` arrived or time is up)."""
    consumer = AIOKafkaConsumer(
        dep.topic("lifecycle.notices"),
        bootstrap_servers=dep.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[Notice] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < until and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found += [Notice(r.key, msgpack.unpackb(r.value), r.timestamp) for r in records]
    finally:
        await consumer.stop()
    return found


def resource_url(worker: WorkerProcess, key: str) -> str:
    return f"{worker.url}/v1/resources/{key}"


def stats(worker: WorkerProcess, api_key: str = ACME_KEY) -> dict[str, Any] | None:
    status, _, body = http_get(f"{worker.url}/v1/lifecycle/stats", api_key)
    return body if status == 200 else None


def stats_when(worker: WorkerProcess, predicate: Any, api_key: str = ACME_KEY) -> dict:
    last: list[dict | None] = [None]

    def check() -> dict | None:
        body = last[0] = stats(worker, api_key)
        return body if body is not None and predicate(body) else None

    try:
        return wait_for(check, timeout=60)
    except TimeoutError:
        raise AssertionError(f"stats never matched; last answer: {last[0]}") from None


def assert_only_survivor(worker: WorkerProcess) -> None:
    """After the expiries: both expired resources are gone everywhere, the third is live."""
    assert http_get(resource_url(worker, "ttl-1"), ACME_KEY)[0] == 404
    assert http_get(resource_url(worker, "idle-1"), ACME_KEY)[0] == 404
    assert http_get(resource_url(worker, "keep-1"), ACME_KEY)[0] == 200
    body = stats(worker)
    assert body is not None
    assert body["resources"]["upload"] == {
        "live": 1,
        "bytes": 7,
        "expired": {"ttl": 1, "idle": 0},
        "released": 0,
    }
    assert body["resources"]["token"]["live"] == 0
    assert body["resources"]["token"]["expired"] == {"ttl": 0, "idle": 1}
    assert [d["key"] for d in body["next_deadlines"]] == []  # keep-1 has no deadline


async def test_ttl_and_idle_expire_on_time_across_restarts(deployment: Deployment) -> None:
    worker = deployment.start()
    events = deployment.topic("lifecycle.events")
    await send_envelopes(
        deployment.bootstrap,
        events,
        [
            envelope(
                "resource.register", "ttl-1", {"kind": "upload", "ttl_s": 30, "size_bytes": 100}
            ),
            envelope("resource.register", "idle-1", {"kind": "token", "idle_s": 20}),
            envelope("resource.register", "keep-1", {"kind": "upload", "size_bytes": 7}),
        ],
    )
    ttl_body = item_when(resource_url(worker, "ttl-1"), lambda b: True)
    assert ttl_body["expires_by"] == "ttl"
    assert ttl_body["deadlines"]["ttl"] == ttl_body["registered_at"] + 30_000
    body = stats_when(worker, lambda b: b["total"]["live"] == 3)
    assert body["resources"]["upload"]["bytes"] == 107
    assert [d["key"] for d in body["next_deadlines"]] == ["idle-1", "ttl-1"]

    worker.stop()  # the deadlines must survive a restart
    worker = deployment.start()
    assert http_get(resource_url(worker, "ttl-1"), ACME_KEY)[0] == 200, "restart outlived ttl"
    await send_envelopes(deployment.bootstrap, events, [envelope("resource.touch", "idle-1", {})])
    idle_body = item_when(resource_url(worker, "idle-1"), lambda b: b["version"] == 2)
    assert idle_body["deadlines"]["idle"] == idle_body["touched_at"] + 20_000

    notices = await read_notices(deployment, until=2, timeout=60)
    by_key = {n.key: n for n in notices}
    assert set(by_key) == {b"acme/ttl-1", b"acme/idle-1"}
    expected = {
        b"acme/ttl-1": ("ttl", ttl_body["expires_at"]),
        b"acme/idle-1": ("idle", idle_body["expires_at"]),
    }
    for key, (reason, deadline) in expected.items():
        notice = by_key[key]
        assert notice.body["type"] == "resource.expired"
        assert (notice.body["reason"], notice.body["deadline"]) == (reason, deadline)
        assert 0 <= notice.produced_at - deadline <= PRECISION_MS
    wait_for(lambda: http_get(resource_url(worker, "ttl-1"), ACME_KEY)[0] == 404)
    stats_when(worker, lambda b: b["total"]["live"] == 1)
    assert_only_survivor(worker)

    worker.stop()
    worker = deployment.start()
    assert_only_survivor(worker)
    worker.stop()
    shutil.rmtree(deployment.root / "w0")  # rebuilt from the changelogs alone
    worker = deployment.start()
    assert_only_survivor(worker)
    # Tombstones held: nothing came back to expire a second time.
    again = await read_notices(deployment, until=3, timeout=4)
    assert sorted(n.key for n in again) == [b"acme/idle-1", b"acme/ttl-1"]


@dataclass
class Model:
    """What the randomized run must leave: live resources, ended ones, rejections."""

    live: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    released: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tenant, kind)
    expired: Counter[tuple[str, str]] = field(default_factory=Counter)
    ended: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tenant, key) notices
    rejected: Counter[str] = field(default_factory=Counter)

    def expected_stats(self, tenant: str) -> dict[str, dict[str, Any]]:
        kinds = {k for t, k in self.released | self.expired if t == tenant}
        kinds |= {r["kind"] for (t, _), r in self.live.items() if t == tenant}
        return {
            kind: {
                "live": sum(
                    1 for (t, _), r in self.live.items() if t == tenant and r["kind"] == kind
                ),
                "bytes": sum(
                    r["size_bytes"]
                    for (t, _), r in self.live.items()
                    if t == tenant and r["kind"] == kind
                ),
                "expired": {"ttl": self.expired[(tenant, kind)], "idle": 0},
                "released": self.released[(tenant, kind)],
            }
            for kind in sorted(kinds)
        }


def random_run(rng: random.Random) -> tuple[list[dict[str, Any]], Model]:
    """Registers, touches and releases (some illegal, some redelivered) and short TTLs.

    Only applied events are redelivered: a redelivered rejected one is dead-lettered again.
    """
    model = Model()
    stream: list[dict[str, Any]] = []
    applied: list[dict[str, Any]] = []
    for _ in range(900):
        tenant = rng.choice(["acme", "acme", "globex"])
        key = f"r-{rng.randint(0, 80)}"
        live = model.live.get((tenant, key))
        roll = rng.random()
        if roll < 0.05 and applied:
            stream.append(dict(rng.choice(applied)))  # redelivery: same id, no effect
            continue
        if live is None and roll < 0.15:
            op = rng.choice(["resource.touch", "resource.release"])
            stream.append(envelope(op, key, {}, tenant=tenant))
            model.rejected["unknown_resource"] += 1
        elif live is None:
            data = {"kind": rng.choice(["a", "b"]), "size_bytes": rng.randint(0, 1000)}
            stream.append(envelope("resource.register", key, data, tenant=tenant))
            applied.append(stream[-1])
            model.live[(tenant, key)] = data
        elif roll < 0.1:
            stream.append(envelope("resource.register", key, {"kind": "a"}, tenant=tenant))
            model.rejected["resource_exists"] += 1
        elif roll < 0.65:
            stream.append(envelope("resource.touch", key, {}, tenant=tenant))
            applied.append(stream[-1])
        else:
            stream.append(envelope("resource.release", key, {}, tenant=tenant))
            applied.append(stream[-1])
            del model.live[(tenant, key)]
            model.released[(tenant, live["kind"])] += 1
            model.ended[(tenant, key)] += 1
    for n in range(40):  # short-lived: all expire by ttl
        tenant = "acme" if n % 4 else "globex"
        data = {"kind": "temp", "ttl_s": 2 + n % 3, "size_bytes": n}
        stream.append(envelope("resource.register", f"t-{n}", data, tenant=tenant))
        model.expired[(tenant, "temp")] += 1
        model.ended[(tenant, f"t-{n}")] += 1
    stream.append(envelope("resource.register", "bad-1", {"kind": "a", "ttl_s": -1}))
    model.rejected["invalid_data"] += 1
    return stream, model


async def test_random_run_stats_and_notices_match_a_reference(deployment: Deployment) -> None:
    stream, model = random_run(random.Random(4711))
    first = deployment.start("w0")
    second = deployment.start("w1")

    await send_envelopes(deployment.bootstrap, deployment.topic("lifecycle.events"), stream)

    for tenant, api_key in (("acme", ACME_KEY), ("globex", GLOBEX_KEY)):
        expected = model.expected_stats(tenant)
        for worker in (first, second):  # every worker sums every partition
            body = stats_when(worker, lambda b, e=expected: b["resources"] == e, api_key)
            assert body["total"]["live"] == sum(s["live"] for s in expected.values())
    ended = sum(model.ended.values())
    notices = await read_notices(deployment, until=ended + 1, timeout=15)
    seen = Counter((n.body["tenant"], n.body["key"]) for n in notices)
    assert seen == model.ended  # exactly once per resource that ended, nothing else
    types = Counter(n.body["type"] for n in notices)
    assert types["resource.expired"] == sum(model.expired.values())
    letters = await read_topic(
        deployment.bootstrap,
        deployment.topic("deadletter"),
        until=sum(model.rejected.values()) + 1,
        timeout=10,
    )
    assert Counter(letter["reason"] for _, letter in letters) == model.rejected
    live_key = next(key for (tenant, key) in model.live if tenant == "acme")
    owners = set()
    for worker in (first, second):
        status, headers, body = http_get(resource_url(worker, live_key), ACME_KEY)
        assert (status, body["key"]) == (200, live_key)
        owners.add(headers["X-Statekeeper-Owner"])
        assert http_get(resource_url(worker, live_key), GLOBEX_KEY)[0] in (200, 404)
    assert len(owners) == 1  # answered by the owner, whichever worker was asked
    assert http_get(resource_url(first, "t-1"), ACME_KEY)[0] == 404


async def test_finished_items_are_purged_with_their_history(deployment: Deployment) -> None:
    worker = deployment.start(STATEKEEPER_RETENTION="acme/workflow=3s")
    await define_invoice(deployment)
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.definitions"),
        [envelope("workflow.define", "invoice", INVOICE, tenant="globex")],
    )
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.events"),
        [
            envelope("workflow.start", "inv-1", {"workflow": "invoice"}),
            envelope("workflow.transition", "inv-1", {"to": "sent"}),
            envelope("workflow.transition", "inv-1", {"to": "paid"}),
            envelope("workflow.start", "inv-2", {"workflow": "invoice"}),
            envelope("workflow.cancel", "inv-2", {}),
            envelope("workflow.start", "inv-3", {"workflow": "invoice"}),
            envelope("workflow.start", "inv-4", {"workflow": "invoice"}),
            envelope("workflow.transition", "inv-4", {"to": "sent"}),
            envelope("workflow.start", "g-1", {"workflow": "invoice"}, tenant="globex"),
            envelope("workflow.transition", "g-1", {"to": "void"}, tenant="globex"),
        ],
    )

    notices = await read_notices(deployment, until=2, timeout=40)
    purged = {n.body["key"]: n.body for n in notices}
    assert set(purged) == {"inv-1", "inv-2"}
    assert (purged["inv-1"]["state"], purged["inv-1"]["condition"]) == ("paid", "completed")
    assert (purged["inv-2"]["state"], purged["inv-2"]["condition"]) == ("draft", "cancelled")
    assert all(n.body["type"] == "workflow.purged" for n in notices)

    def purged_everywhere(w: WorkerProcess) -> bool:
        return all(
            http_get(f"{w.url}/v1/workflows/{key}{suffix}", ACME_KEY)[0] == 404
            for key in ("inv-1", "inv-2")
            for suffix in ("", "/history")
        )

    wait_for(lambda: purged_everywhere(worker))
    expected_counts = {
        "states": {"draft": 1, "sent": 1, "paid": 0, "void": 0},
        "conditions": {"active": 2},
    }
    counts = http_get(f"{worker.url}/v1/workflows/counts", ACME_KEY)[2]
    assert counts["invoice"] == expected_counts
    body = stats_when(worker, lambda b: b["purged"]["workflow"] == 2)
    assert body["purged"] == {"workflow": 2}
    assert http_get(f"{worker.url}/v1/workflows/g-1", GLOBEX_KEY)[0] == 200  # 30-day default
    globex = stats(worker, GLOBEX_KEY)
    assert globex is not None and globex["next_deadlines"][0]["key"] == "g-1"

    worker.stop()
    shutil.rmtree(deployment.root / "w0")  # the purge's tombstones rebuild nothing
    worker = deployment.start(STATEKEEPER_RETENTION="acme/workflow=3s")
    assert purged_everywhere(worker)
    assert http_get(f"{worker.url}/v1/workflows/counts", ACME_KEY)[2]["invoice"] == expected_counts
    assert http_get(f"{worker.url}/v1/workflows/inv-3", ACME_KEY)[0] == 200
    again = await read_notices(deployment, until=3, timeout=4)
    assert len(again) == 2


def ended_so_far(worker: WorkerProcess) -> int:
    """This worker's ``statekeeper_resources_ended_total``, summed over reasons."""
    status, _, text = http_get(f"{worker.url}/metrics")
    if status != 200:
        return 0
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("statekeeper_resources_ended_total{")
    )


async def test_sigkill_during_an_expiry_wave_loses_no_notice(deployment: Deployment) -> None:
    # A small batch spreads the wave over many ticks, so the crash lands inside it.
    small_batch = {"STATEKEEPER_LIFECYCLE_BATCH": "10"}
    worker = deployment.start(**small_batch)
    count = 1_500
    registers = [
        envelope("resource.register", f"w-{n}", {"kind": "wave", "ttl_s": 12, "size_bytes": 1})
        for n in range(count)
    ]
    await send_envelopes(deployment.bootstrap, deployment.topic("lifecycle.events"), registers)
    stats_when(worker, lambda b: b["total"]["live"] + b["total"]["expired"]["ttl"] == count)

    wait_for(lambda: ended_so_far(worker) > 0, timeout=60, interval=0.02)
    assert ended_so_far(worker) < count, "the crash must land inside the wave"
    worker.kill()
    worker = deployment.start(**small_batch)

    body = stats_when(worker, lambda b: b["total"]["expired"]["ttl"] == count)
    assert (body["total"]["live"], body["total"]["bytes"]) == (0, 0)
    notices = await read_notices(deployment, until=count * 2, timeout=10)
    keys = [notice.key for notice in notices]
    assert len(set(keys)) == count  # every expiry noticed
    assert len(keys) == count  # and only once: a batch's notices land with its state
    assert http_get(resource_url(worker, "w-7"), ACME_KEY)[0] == 404
