"""The first vertical slice end to end: msgpack events in over Kafka, answers over HTTP."""

from __future__ import annotations

import shutil

import pytest

from tests.integration.conftest import ACME_KEY, GLOBEX_KEY, Deployment
from tests.support.kafka import envelope, send_envelopes
from tests.support.worker import http_get, wait_for

pytestmark = pytest.mark.integration

INVOICE = {
    "states": ["draft", "sent", "paid", "void"],
    "initial": "draft",
    "terminal": ["paid", "void"],
    "transitions": [["draft", "sent"], ["sent", "paid"], ["draft", "void"], ["sent", "void"]],
}


async def define_invoice(dep: Deployment) -> None:
    await send_envelopes(
        dep.bootstrap,
        dep.topic("workflow.definitions"),
        [envelope("workflow.define", "invoice", INVOICE)],
    )


def item_when(url: str, predicate, api_key: str = ACME_KEY) -> dict:  # type: ignore[no-untyped-def]
    def check() -> dict | None:
        status, _, body = http_get(url, api_key)
        return body if status == 200 and predicate(body) else None

    return wait_for(check, timeout=30)


async def test_start_then_read_over_http(deployment: Deployment) -> None:
    worker = deployment.start()
    await define_invoice(deployment)
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.events"),
        [envelope("workflow.start", "inv-1", {"workflow": "invoice", "attrs": {"customer": "c9"}})],
    )

    body = item_when(f"{worker.url}/v1/workflows/inv-1", lambda b: True)

    assert body["state"] == "draft"
    assert body["condition"] == "active"
    assert body["version"] == 1
    assert body["attrs"] == {"customer": "c9"}


async def test_other_tenant_sees_404_like_missing(deployment: Deployment) -> None:
    worker = deployment.start()
    await define_invoice(deployment)
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.events"),
        [envelope("workflow.start", "inv-7", {"workflow": "invoice"})],
    )
    item_when(f"{worker.url}/v1/workflows/inv-7", lambda b: True)

    other = http_get(f"{worker.url}/v1/workflows/inv-7", GLOBEX_KEY)
    missing = http_get(f"{worker.url}/v1/workflows/never-was", ACME_KEY)
    anonymous = http_get(f"{worker.url}/v1/workflows/inv-7")

    assert other[0] == missing[0] == 404
    assert other[2]["error"]["code"] == missing[2]["error"]["code"] == "not_found"
    assert anonymous[0] == 401


async def test_item_survives_restart_and_rebuilds_from_changelog(deployment: Deployment) -> None:
    worker = deployment.start()
    await define_invoice(deployment)
    events = deployment.topic("workflow.events")
    await send_envelopes(
        deployment.bootstrap,
        events,
        [
            envelope("workflow.start", "inv-2", {"workflow": "invoice"}),
            envelope("workflow.transition", "inv-2", {"to": "sent"}),
        ],
    )
    item_when(f"{worker.url}/v1/workflows/inv-2", lambda b: b["state"] == "sent")

    worker.stop()
    worker = deployment.start()  # same data dir: RocksDB state is reused
    status, _, body = http_get(f"{worker.url}/v1/workflows/inv-2", ACME_KEY)
    assert (status, body["state"], body["version"]) == (200, "sent", 2)

    worker.stop()
    shutil.rmtree(deployment.root / "w0")  # data dir gone: rebuilt from the changelog
    worker = deployment.start()
    status, _, body = http_get(f"{worker.url}/v1/workflows/inv-2", ACME_KEY)
    assert (status, body["state"], body["version"]) == (200, "sent", 2)


async def test_definitions_file_is_loaded_at_start(deployment: Deployment) -> None:
    path = deployment.root / "workflows.toml"
    path.write_text(
        'tenant = "acme"\n[[workflows]]\nname = "ticket"\nstates = ["open", "closed"]\n'
        'initial = "open"\nterminal = ["closed"]\ntransitions = [["open", "closed"]]\n'
    )
    worker = deployment.start(STATEKEEPER_DEFINITIONS_FILE=str(path))
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.events"),
        [
            envelope("workflow.start", "t-1", {"workflow": "ticket"}),
            envelope("workflow.transition", "t-1", {"to": "closed"}),
        ],
    )

    body = item_when(f"{worker.url}/v1/workflows/t-1", lambda b: b["version"] == 2)

    assert (body["state"], body["condition"]) == ("closed", "completed")
