"""A data dir rebuilt by the bulk restore answers exactly as one rebuilt by faust's recovery."""

from __future__ import annotations

import re
import shutil
from typing import Any

import pytest

from tests.integration.conftest import ACME_KEY, Deployment
from tests.integration.test_workflow_slice import define_invoice, item_when
from tests.support.kafka import envelope, send_envelopes
from tests.support.worker import WorkerProcess, http_get

pytestmark = pytest.mark.integration

ITEMS = 300
BULK = {"STATEKEEPER_RESTORE_MIN_RECORDS": "1"}  # every partition behind goes in bulk
FAUST_ONLY = {"STATEKEEPER_RESTORE_MIN_RECORDS": str(10**9)}


def answers(worker: WorkerProcess) -> dict[str, Any]:
    """Every item with its history, the counts, a session and the resources' stats."""
    seen: dict[str, Any] = {}
    for n in range(ITEMS):
        for suffix in ("", "/history"):
            path = f"/v1/workflows/inv-{n}{suffix}"
            status, _, body = http_get(f"{worker.url}{path}", ACME_KEY)
            seen[path] = (status, body)
    for path in ("/v1/workflows/counts", "/v1/sessions/s-1", "/v1/lifecycle/stats"):
        status, _, body = http_get(f"{worker.url}{path}", ACME_KEY)
        seen[path] = (status, body)
    return seen


def restored_records(worker: WorkerProcess) -> int:
    found = re.findall(r"bulk restore: (\d+) records", worker.log_path.read_text())
    return sum(int(n) for n in found)


async def test_bulk_restore_rebuilds_what_faust_would(deployment: Deployment) -> None:
    worker = deployment.start()
    await define_invoice(deployment)
    moves = []
    for n in range(ITEMS):
        moves.append(envelope("workflow.start", f"inv-{n}", {"workflow": "invoice"}))
        if n % 3:
            moves.append(envelope("workflow.transition", f"inv-{n}", {"to": "sent"}))
        if n % 3 == 2:
            moves.append(envelope("workflow.transition", f"inv-{n}", {"to": "paid"}))
    await send_envelopes(deployment.bootstrap, deployment.topic("workflow.events"), moves)
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("session.events"),
        [envelope("session.start", "s-1", {"user": "u-1", "data": {"step": 1}})],
    )
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("lifecycle.events"),
        [
            envelope("resource.register", f"r-{n}", {"kind": "file", "size_bytes": 10})
            for n in range(50)
        ],
    )
    item_when(f"{worker.url}/v1/workflows/inv-{ITEMS - 1}", lambda b: b["state"] == "paid")
    item_when(f"{worker.url}/v1/sessions/s-1", lambda b: True)
    item_when(f"{worker.url}/v1/lifecycle/stats", lambda b: b["total"]["live"] == 50)
    worker.stop()

    shutil.rmtree(deployment.root / "w0")
    worker = deployment.start(**FAUST_ONLY)
    by_faust = answers(worker)
    assert restored_records(worker) == 0
    worker.stop()

    shutil.rmtree(deployment.root / "w0")
    worker = deployment.start(**BULK)
    assert restored_records(worker) >= 2 * ITEMS  # item rows and history at least
    assert answers(worker) == by_faust
    assert by_faust["/v1/workflows/inv-1"][1]["state"] == "sent"
    assert by_faust["/v1/sessions/s-1"][0] == 200

    # Events after the restore apply once, on top of the restored state.
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.events"),
        [envelope("workflow.transition", "inv-0", {"to": "sent"})],
    )
    body = item_when(f"{worker.url}/v1/workflows/inv-0", lambda b: b["version"] == 2)
    assert body["state"] == "sent"
    _, _, history = http_get(f"{worker.url}/v1/workflows/inv-0/history", ACME_KEY)
    assert [entry["version"] for entry in history["history"]] == [1, 2]
