"""Reports over HTTP from real workers: computed once, invalidated by the status stream,
answered without Redis while it is down."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.conftest import ACME_KEY, GLOBEX_KEY, Deployment
from tests.integration.test_workflow_slice import define_invoice, item_when
from tests.support.kafka import envelope, send_envelopes
from tests.support.redis_server import RedisServer
from tests.support.worker import WorkerProcess, http_get, wait_for

pytestmark = pytest.mark.integration

REPORT = "/v1/reports/workflow?workflow=invoice"


def metric(worker: WorkerProcess, name: str) -> float:
    """The sum of a Prometheus metric's samples on one worker (0 when absent)."""
    _, _, text = http_get(f"{worker.url}/metrics")
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text or ""))


def report(worker: WorkerProcess, path: str = REPORT, key: str = ACME_KEY) -> tuple[str, Any]:
    status, headers, body = http_get(f"{worker.url}{path}", key)
    assert status == 200, body
    assert headers["X-Cache"] == body["cache"]
    assert int(headers["Age"]) == int(body["age_s"])
    return headers["X-Cache"], body["result"]


async def invoice_history(dep: Deployment, items: int) -> None:
    """``items`` invoices: all sent, every third one failed once and resumed, half paid."""
    events = []
    for n in range(items):
        key = f"inv-{n}"
        events += [
            envelope("workflow.start", key, {"workflow": "invoice"}),
            envelope("workflow.transition", key, {"to": "sent"}),
        ]
        if n % 3 == 0:
            events += [
                envelope("workflow.fail", key, {"error": "smtp"}),
                envelope("workflow.resume", key, {}),
            ]
        if n % 2 == 0:
            events.append(envelope("workflow.transition", key, {"to": "paid"}))
    await send_envelopes(dep.bootstrap, dep.topic("workflow.events"), events)


async def events_applied(dep: Deployment, workers: list[WorkerProcess]) -> bool:
    """Every workflow event committed (so its batch's invalidations were scheduled) and no
    invalidation left to send."""
    topic = dep.topic("workflow.events")
    admin = AIOKafkaAdminClient(bootstrap_servers=dep.bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=dep.bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        group = f"{dep.env['STATEKEEPER_APP_ID']}-workflow"
        committed = await admin.list_consumer_group_offsets(group)
        ours = {tp: meta.offset for tp, meta in committed.items() if tp.topic == topic}
        ends = await consumer.end_offsets(list(ours)) if ours else {}
    finally:
        await consumer.stop()
        await admin.close()
    caught_up = bool(ours) and all(ours[tp] >= ends[tp] for tp in ours)
    idle = all(metric(w, "statekeeper_cache_invalidations_scheduled") == 0 for w in workers)
    return caught_up and idle


async def wait_events_applied(dep: Deployment, workers: list[WorkerProcess]) -> None:
    deadline = time.monotonic() + 60
    while not await events_applied(dep, workers):
        assert time.monotonic() < deadline, "workflow events not all applied"
        await asyncio.sleep(0.3)


def wait_counts(worker: WorkerProcess, states: dict[str, int], conditions: dict[str, int]) -> None:
    """Until every invoice event has been applied."""

    def settled() -> bool:
        status, _, body = http_get(f"{worker.url}/v1/workflows/counts?workflow=invoice", ACME_KEY)
        if status != 200 or "invoice" not in body:
            return False
        counts = body["invoice"]
        wanted = {k: v for k, v in counts["states"].items() if v}
        return bool(wanted == states and counts["conditions"] == conditions)

    wait_for(settled, timeout=60)


def report_when_not_hit(worker: WorkerProcess) -> tuple[str, Any] | None:
    answer = report(worker)
    return answer if answer[0] != "hit" else None


async def test_report_computed_once_for_100_requests_to_two_workers_and_invalidated(
    deployment: Deployment,
) -> None:
    slow_ok = {"STATEKEEPER_CACHE_REDIS_TIMEOUT_S": "5"}  # a loaded host must not trip it
    workers = [deployment.start(name, ready=False, **slow_ok) for name in ("w0", "w1")]
    for worker in workers:
        worker.wait_ready()
    await define_invoice(deployment)
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.definitions"),
        [envelope("workflow.define", "order", {"states": ["new", "done"], "initial": "new",
                  "terminal": ["done"], "transitions": [["new", "done"]]})],
    )  # fmt: skip
    await invoice_history(deployment, 30)
    wait_counts(workers[0], {"sent": 15, "paid": 15}, {"active": 15, "completed": 15})
    await wait_events_applied(deployment, workers)

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda n: report(workers[n % 2]), range(100)))

    computations = sum(metric(w, "statekeeper_cache_computations_total") for w in workers)
    assert computations == 1
    assert {status for status, _ in answers} <= {"miss", "hit"}
    first = answers[0][1]
    assert all(result == first for _, result in answers)
    states = first["states"]
    assert first["items"] == 30
    assert (states["sent"]["items"], states["paid"]["items"]) == (15, 15)
    assert (states["sent"]["entries"], states["sent"]["fails"]) == (30, 10)
    assert states["sent"]["failure_rate"] == pytest.approx(1 / 3)
    assert states["draft"]["time_in_state_samples"] == 30
    assert states["sent"]["time_in_state_samples"] == 15  # the paid ones left "sent"
    assert states["draft"]["median_s"] is not None and states["void"]["median_s"] is None
    assert report(workers[1])[0] == "hit"

    # A change to an unrelated workflow: once it has been consumed, the report is still a hit.
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.events"),
        [envelope("workflow.start", "ord-1", {"workflow": "order"})],
    )
    item_when(f"{workers[0].url}/v1/workflows/ord-1", lambda b: True)
    await wait_events_applied(deployment, workers)
    assert report(workers[0])[0] == "hit"

    # A change to the invoice workflow: the report follows it within a second.
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.events"),
        [envelope("workflow.transition", "inv-1", {"to": "paid"})],
    )
    item_when(f"{workers[1].url}/v1/workflows/inv-1", lambda b: b["state"] == "paid")
    status, fresh = wait_for(lambda: report_when_not_hit(workers[0]), timeout=1.0, interval=0.05)
    assert status == "miss"
    assert fresh["states"]["paid"]["items"] == 16


async def test_reports_are_listed_and_scoped_to_the_tenant(deployment: Deployment) -> None:
    worker = deployment.start()
    await define_invoice(deployment)
    await invoice_history(deployment, 3)
    wait_counts(worker, {"sent": 1, "paid": 2}, {"active": 1, "completed": 2})

    status, _, listing = http_get(f"{worker.url}/v1/reports", ACME_KEY)
    assert status == 200
    workflow = next(r for r in listing["reports"] if r["name"] == "workflow")
    assert workflow["params"][0]["name"] == "workflow"

    assert report(worker)[1]["items"] == 3
    assert http_get(f"{worker.url}{REPORT}", GLOBEX_KEY)[0] == 404  # globex has no invoice
    assert http_get(f"{worker.url}/v1/reports/workflow", ACME_KEY)[0] == 400
    assert http_get(f"{worker.url}/v1/reports/nope", ACME_KEY)[0] == 404
    assert http_get(f"{worker.url}{REPORT}")[0] == 401


async def test_without_redis_reports_bypass_events_go_on_and_caching_resumes(
    deployment: Deployment,
) -> None:
    redis_server = RedisServer(deployment.root / "private-redis").start()
    try:
        worker = deployment.start(
            STATEKEEPER_REDIS_URL=redis_server.url, STATEKEEPER_CACHE_BREAKER_RETRY_S="1"
        )
        await define_invoice(deployment)
        await invoice_history(deployment, 4)
        wait_counts(worker, {"sent": 2, "paid": 2}, {"active": 2, "completed": 2})
        await wait_events_applied(deployment, [worker])
        assert report(worker)[0] == "miss"
        assert report(worker)[0] == "hit"

        redis_server.stop()
        down = [report(worker) for _ in range(5)]
        await send_envelopes(
            deployment.bootstrap,
            deployment.topic("workflow.events"),
            [envelope("workflow.transition", "inv-1", {"to": "paid"})],
        )
        item_when(f"{worker.url}/v1/workflows/inv-1", lambda b: b["state"] == "paid")
        after_event = report(worker)

        redis_server.start()
        wait_for(lambda: report(worker)[0] == "hit", timeout=30)
    finally:
        redis_server.stop()

    assert [status for status, _ in down] == ["bypass"] * 5
    assert after_event[0] == "bypass"
    assert after_event[1]["states"]["paid"]["items"] == 3  # computed from the new state
    assert metric(worker, "statekeeper_cache_bypasses_total") >= 6
