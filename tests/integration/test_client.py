"""statekeeper.client against real workers: every event type, every endpoint, the streams."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from statekeeper.client import (
    AsyncQueryClient,
    BadRequest,
    Forbidden,
    NotFound,
    Producer,
    QueryClient,
    StreamReader,
    Unauthorized,
    lifecycle_notices,
    status_changes,
    wait_until,
)
from tests.integration.conftest import ACME_KEY, GLOBEX_KEY, Deployment
from tests.integration.test_workflow_slice import INVOICE

pytestmark = pytest.mark.integration

READ_ONLY_KEY = "acme-readonly-0123456789"
TICKET = {
    "states": ["open", "closed"],
    "initial": "open",
    "terminal": ["closed"],
    "transitions": [["open", "closed"]],
}


def producer(dep: Deployment) -> Producer:
    return Producer("acme", bootstrap_servers=dep.bootstrap, topic_prefix=dep.prefix)


async def next_matching(reader: StreamReader, timeout_s: float = 30.0) -> dict[str, Any]:
    received = await asyncio.wait_for(reader.__anext__(), timeout_s)
    return received.value


async def wait_gone(fetch: Callable[[], Awaitable[Any]], timeout_s: float = 30.0) -> None:
    """Poll until ``fetch`` answers 404."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await fetch()
        except NotFound:
            return
        assert asyncio.get_running_loop().time() < deadline, "still found"
        await asyncio.sleep(0.05)


async def test_workflow_events_round_trip_through_every_workflow_endpoint(
    deployment: Deployment,
) -> None:
    keys = f"acme:{ACME_KEY},globex:{GLOBEX_KEY},acme:{READ_ONLY_KEY}:ro"
    worker = deployment.start(STATEKEEPER_API_KEYS=keys, STATEKEEPER_SLA_CHECK_INTERVAL_S="0.3")
    async with producer(deployment) as p, AsyncQueryClient(worker.url, ACME_KEY) as api:
        await p.define_workflow("invoice", **INVOICE, sla_seconds={"sent": 1})
        started = await p.start_item("inv-1", "invoice", attrs={"customer": "c-7"}, id="start-1")
        assert (started.id, started.topic) == ("start-1", deployment.topic("workflow.events"))
        steps = [
            await p.transition("inv-1", "sent", reason="mailed", actor="ann"),
            await p.fail("inv-1", "smtp down", retryable=True),
            await p.resume("inv-1", reason="smtp back"),
            await p.annotate("inv-1", {"priority": "high"}),
            await p.transition("inv-1", "paid", expected_version=5),
        ]
        assert len({s.id for s in steps}) == 5  # generated ids, returned for retries
        await p.start_item("inv-2", "invoice")
        await p.cancel("inv-2", reason="duplicate")
        await p.start_item("inv-3", "invoice")
        await p.transition("inv-3", "sent")
        # A retry with a known id has no effect.
        await p.transition("inv-1", "sent", reason="mailed", actor="ann", id=steps[0].id)

        item = await wait_until(lambda: api.item("inv-1"), lambda i: i["version"] >= 6)
        assert (item["state"], item["condition"], item["version"], item["attempt"]) == (
            "paid",
            "completed",
            6,
            2,
        )
        assert item["attrs"] == {"customer": "c-7", "priority": "high"}
        history = (await api.history("inv-1"))["history"]
        assert [(h["from"], h["to"], h["condition"]) for h in history] == [
            (None, "draft", "active"),
            ("draft", "sent", "active"),
            ("sent", "sent", "failed"),
            ("sent", "sent", "active"),
            ("sent", "sent", "active"),
            ("sent", "paid", "completed"),
        ]
        assert history[1]["event_id"] == steps[0].id and history[1]["actor"] == "ann"
        await wait_until(lambda: api.item("inv-3"), lambda i: i["state"] == "sent")
        await wait_until(lambda: api.item("inv-2"), lambda i: i["condition"] == "cancelled")

        listed = await api.items(workflow="invoice", attrs={"customer": "c-7"})
        assert [i["key"] for i in listed["items"]] == ["inv-1"]
        page = await api.items(workflow="invoice", limit=2)
        assert len(page["items"]) == 2 and page["next_cursor"]
        rest = await api.items(workflow="invoice", limit=2, cursor=page["next_cursor"])
        assert {i["key"] for i in page["items"] + rest["items"]} == {"inv-1", "inv-2", "inv-3"}
        counts = await api.counts("invoice")
        assert counts["invoice"]["states"] == {"draft": 1, "sent": 1, "paid": 1, "void": 0}
        assert counts["invoice"]["conditions"] == {"active": 1, "completed": 1, "cancelled": 1}
        stuck = await wait_until(lambda: api.stuck("invoice"), lambda s: bool(s["items"]))
        assert [i["key"] for i in stuck["items"]] == ["inv-3"]

        reports = await api.reports()
        assert "workflow" in [r["name"] for r in reports["reports"]]
        report = await api.report("workflow", workflow="invoice")
        assert report["report"] == "workflow" and report["cache"] in ("miss", "bypass")

        # The API's errors arrive as typed exceptions.
        with pytest.raises(NotFound) as missing:
            await api.item("inv-404")
        assert missing.value.code == "not_found" and not missing.value.retriable
        with pytest.raises(BadRequest):
            await api.items(limit=0)
        async with AsyncQueryClient(worker.url, "wrong-key-0123456789") as stranger:
            with pytest.raises(Unauthorized):
                await stranger.item("inv-1")
        async with AsyncQueryClient(worker.url, GLOBEX_KEY) as globex:
            with pytest.raises(NotFound):
                await globex.item("inv-1")  # another tenant's item: 404 like a missing one
        async with AsyncQueryClient(worker.url, READ_ONLY_KEY) as reader:
            with pytest.raises(Forbidden):
                await reader.post_events({"type": "workflow.start", "key": "x", "data": {}})

        posted = await api.post_events(
            [{"type": "workflow.start", "key": "inv-9", "data": {"workflow": "invoice"}}]
        )
        assert posted["accepted"] == 1
        await wait_until(lambda: api.item("inv-9"))
        assert (await api.healthz()) == {"status": "ok"}
        assert (await api.readyz()) == {"status": "ready"}
        assert "statekeeper_ready 1" in await api.metrics()

    # The blocking client answers the same way.
    sync = QueryClient(worker.url, ACME_KEY)
    assert sync.item("inv-1")["state"] == "paid"
    with pytest.raises(NotFound):
        sync.history("inv-404")
    with pytest.raises(Unauthorized):
        QueryClient(worker.url, None).counts()


async def test_sessions_conversations_and_resources_round_trip(deployment: Deployment) -> None:
    worker = deployment.start()
    notices = lifecycle_notices(
        bootstrap_servers=deployment.bootstrap, topic_prefix=deployment.prefix, start="latest"
    )
    async with producer(deployment) as p, AsyncQueryClient(worker.url, ACME_KEY) as api, notices:
        await p.start_session("s-1", "u-1", idle_timeout_s=600, data={"plan": "pro"})
        await p.update_session("s-1", step="address", data={"city": "Oslo"}, remove=["plan"])
        session = await wait_until(lambda: api.session("s-1"), lambda s: s["version"] >= 2)
        assert (session["user"], session["data"], session["step"]) == (
            "u-1",
            {"city": "Oslo"},
            "address",
        )
        await p.end_session("s-1", reason="submitted")
        closed = await next_matching(notices)
        assert (closed["type"], closed["key"], closed["reason"]) == (
            "session.closed",
            "s-1",
            "ended",
        )
        await wait_gone(lambda: api.session("s-1"))  # RocksDB follows the notice within ms

        await p.add_message("u-1", "c-a", "user", "my parcel to Bergen is late")
        await p.add_message("u-1", "c-a", "assistant", "sorry, I will check the parcel", tokens=9)
        page = await wait_until(
            lambda: api.messages("u-1", conversation="c-a"), lambda m: len(m["messages"]) == 2
        )
        assert [m["role"] for m in page["messages"]] == ["user", "assistant"]
        found = await api.search("u-1", "Bergen parcel")
        assert found["results"][0]["content"] == "my parcel to Bergen is late"
        context = await api.context("u-1", 200, conversation="c-a")
        assert context["used_tokens"] <= 200 and len(context["recent"]) == 2
        await p.forget("u-1", conversation="c-a")
        forgotten = await next_matching(notices)
        assert (forgotten["type"], forgotten["conversation"]) == ("conversation.forgotten", "c-a")

        await p.register_resource("r-1", "upload", ttl_s=3600, size_bytes=10, meta={"a": 1})
        await p.touch_resource("r-1")
        resource = await wait_until(lambda: api.resource("r-1"), lambda r: r["version"] >= 2)
        assert (resource["kind"], resource["size_bytes"], resource["meta"]) == (
            "upload",
            10,
            {"a": 1},
        )
        stats = await api.lifecycle_stats()
        assert stats["resources"]["upload"]["live"] == 1
        await p.release_resource("r-1")
        released = await next_matching(notices)
        assert (released["type"], released["key"]) == ("resource.released", "r-1")
        await wait_gone(lambda: api.resource("r-1"))  # RocksDB follows the notice within ms


async def test_status_stream_filters_by_workflow_and_resumes_in_its_group(
    deployment: Deployment,
) -> None:
    deployment.start()
    group = f"billing-{uuid.uuid4().hex[:6]}"

    def invoices() -> StreamReader:
        return status_changes(
            bootstrap_servers=deployment.bootstrap,
            topic_prefix=deployment.prefix,
            group_id=group,
            workflow="invoice",
        )

    async with producer(deployment) as p:
        await p.define_workflow("invoice", **INVOICE)
        await p.define_workflow("ticket", **TICKET)
        for n in range(3):
            await p.start_item(f"inv-{n}", "invoice")
            await p.start_item(f"tk-{n}", "ticket")
        first: list[dict[str, Any]] = []
        async with invoices() as changes:
            async for change in changes:
                first.append(change.value)
                if len(first) == 2:
                    break
        # More changes while the reader is away, for both workflows.
        for n in range(3):
            await p.transition(f"inv-{n}", "sent")
            await p.transition(f"tk-{n}", "closed")

    assert all(c["workflow"] == "invoice" for c in first)
    second: list[dict[str, Any]] = []
    async with invoices() as changes:
        while len(first) + len(second) < 6:  # 3 starts + 3 transitions of invoices
            second.append(await next_matching(changes))
    seen = [c["event_id"] for c in first + second]
    assert len(set(seen)) == 6, "a change was delivered twice after resuming"
    assert {c["workflow"] for c in second} == {"invoice"}
    assert sorted((c["key"], c["to"]) for c in first + second) == sorted(
        [(f"inv-{n}", "draft") for n in range(3)] + [(f"inv-{n}", "sent") for n in range(3)]
    )
