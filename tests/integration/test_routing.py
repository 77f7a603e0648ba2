"""A query is answered by whichever worker receives it: forwarded to the key's owner."""

from __future__ import annotations

import pytest

from tests.integration.conftest import ACME_KEY, Deployment
from tests.integration.test_workflow_slice import define_invoice
from tests.support.kafka import envelope, send_envelopes
from tests.support.worker import http_get, wait_for

pytestmark = pytest.mark.integration


async def test_both_workers_answer_for_every_item(deployment: Deployment) -> None:
    first = deployment.start("w0")
    second = deployment.start("w1")
    await define_invoice(deployment)
    items = [f"inv-{n}" for n in range(12)]  # 12 keys over 4 partitions reach both workers
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.events"),
        [envelope("workflow.start", item, {"workflow": "invoice"}) for item in items],
    )

    def all_answered(worker_url: str) -> bool:
        return all(
            http_get(f"{worker_url}/v1/workflows/{item}", ACME_KEY)[0] == 200 for item in items
        )

    wait_for(lambda: all_answered(first.url) and all_answered(second.url), timeout=60)
    owners = {
        http_get(f"{first.url}/v1/workflows/{item}", ACME_KEY)[1].get("X-Statekeeper-Owner")
        for item in items
    }
    assert owners == {first.url, second.url}
