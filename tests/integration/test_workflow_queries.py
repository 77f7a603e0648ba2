"""History, counts, listings and stuck items through Kafka and HTTP."""

from __future__ import annotations

import pytest

from tests.integration.conftest import ACME_KEY, GLOBEX_KEY, Deployment
from tests.integration.test_workflow_slice import INVOICE, define_invoice, item_when
from tests.support.kafka import envelope, read_topic, send_envelopes
from tests.support.worker import http_get, wait_for

pytestmark = pytest.mark.integration


async def test_history_oldest_first_with_failure_and_resume(deployment: Deployment) -> None:
    worker = deployment.start()
    await define_invoice(deployment)
    events = [
        envelope("workflow.start", "inv-1", {"workflow": "invoice"}),
        envelope("workflow.transition", "inv-1", {"to": "sent", "actor": "ann"}),
        envelope("workflow.fail", "inv-1", {"error": "smtp timeout"}),
        envelope("workflow.resume", "inv-1", {"reason": "smtp back"}),
        envelope("workflow.transition", "inv-1", {"to": "paid", "expected_version": 4}),
    ]
    await send_envelopes(deployment.bootstrap, deployment.topic("workflow.events"), events)

    item = item_when(f"{worker.url}/v1/workflows/inv-1", lambda b: b["version"] == 5)
    status, _, body = http_get(f"{worker.url}/v1/workflows/inv-1/history", ACME_KEY)

    assert (item["state"], item["condition"], item["attempt"]) == ("paid", "completed", 2)
    assert status == 200
    steps = [(h["from"], h["to"], h["condition"], h["version"]) for h in body["history"]]
    assert steps == [
        (None, "draft", "active", 1),
        ("draft", "sent", "active", 2),
        ("sent", "sent", "failed", 3),
        ("sent", "sent", "active", 4),
        ("sent", "paid", "completed", 5),
    ]
    assert [h["event_id"] for h in body["history"]] == [e["id"] for e in events]
    assert body["history"][2]["error"]["message"] == "smtp timeout"
    assert http_get(f"{worker.url}/v1/workflows/inv-1/history", GLOBEX_KEY)[0] == 404


async def test_counts_and_listing_follow_the_items(deployment: Deployment) -> None:
    worker = deployment.start()
    await define_invoice(deployment)
    starts = [
        envelope(
            "workflow.start",
            f"inv-{n}",
            {"workflow": "invoice", "attrs": {"customer": f"c{n % 3}"}},
        )
        for n in range(30)
    ]
    moves = [envelope("workflow.transition", f"inv-{n}", {"to": "sent"}) for n in range(10)]
    fails = [envelope("workflow.fail", f"inv-{n}", {"error": "x"}) for n in range(3)]
    other_tenant = [envelope("workflow.start", "g-1", {"workflow": "invoice"}, tenant="globex")]
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.events"),
        starts + moves + fails + other_tenant,
    )

    def counts() -> dict | None:
        status, _, body = http_get(f"{worker.url}/v1/workflows/counts", ACME_KEY)
        done = status == 200 and body["invoice"]["conditions"].get("failed") == 3
        return body if done else None

    body = wait_for(counts)
    assert body["invoice"]["states"] == {"draft": 20, "sent": 10, "paid": 0, "void": 0}
    assert body["invoice"]["conditions"] == {"active": 27, "failed": 3}

    listed, cursor, pages = [], None, 0
    while True:
        url = f"{worker.url}/v1/workflows?workflow=invoice&state=draft&attr.customer=c1&limit=3"
        status, _, page = http_get(url + (f"&cursor={cursor}" if cursor else ""), ACME_KEY)
        assert status == 200
        listed += [item["key"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = {f"inv-{n}" for n in range(10, 30) if n % 3 == 1}
    assert sorted(listed) == sorted(expected)  # every match once, no duplicates
    assert pages >= 3
    failed = http_get(f"{worker.url}/v1/workflows?condition=failed", ACME_KEY)[2]
    assert sorted(i["key"] for i in failed["items"]) == ["inv-0", "inv-1", "inv-2"]
    assert http_get(f"{worker.url}/v1/workflows?cursor=garbage", ACME_KEY)[0] == 400


async def test_stuck_items_listed_and_noticed_once(deployment: Deployment) -> None:
    worker = deployment.start()
    sla = {**INVOICE, "sla_seconds": {"sent": 2}}
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.definitions"),
        [envelope("workflow.define", "invoice", sla)],
    )
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.events"),
        [
            envelope("workflow.start", "slow", {"workflow": "invoice"}),
            envelope("workflow.transition", "slow", {"to": "sent"}),
            envelope("workflow.start", "fast", {"workflow": "invoice"}),
            envelope("workflow.transition", "fast", {"to": "sent"}),
            envelope("workflow.transition", "fast", {"to": "paid"}),
        ],
    )

    def stuck() -> list | None:
        body = http_get(f"{worker.url}/v1/workflows/stuck", ACME_KEY)[2]
        return body["items"] if body and body.get("items") else None

    items = wait_for(stuck, timeout=20)
    assert [i["key"] for i in items] == ["slow"]
    assert items[0]["overdue_ms"] >= 0
    notices = await read_topic(
        deployment.bootstrap, deployment.topic("lifecycle.notices"), until=2, timeout=6
    )
    assert [(k, n["type"], n["state"]) for k, n in notices] == [
        (b"acme/slow", "workflow.stuck", "sent")
    ]
