"""POST /v1/events: JSON envelopes in over HTTP, validated, produced, applied; freshness."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.integration.conftest import ACME_KEY, GLOBEX_KEY, Deployment
from tests.integration.test_workflow_slice import INVOICE
from tests.support.kafka import read_topic
from tests.support.worker import http_get, wait_for

pytestmark = pytest.mark.integration

READ_ONLY_KEY = "acme-readonly-0123456789"


def post(url: str, body: Any, api_key: str | None = ACME_KEY, raw: bytes | None = None):  # type: ignore[no-untyped-def]
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(f"{url}/v1/events", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def test_posted_events_are_applied_and_answers_say_how_fresh(deployment: Deployment) -> None:
    keys = f"acme:{ACME_KEY},globex:{GLOBEX_KEY},acme:{READ_ONLY_KEY}:ro"
    worker = deployment.start(STATEKEEPER_API_KEYS=keys)
    status, body = post(worker.url, {"type": "workflow.define", "key": "invoice", "data": INVOICE})
    assert status == 202 and body["accepted"] == 1
    batch = [
        {"type": "workflow.start", "key": "inv-1", "id": "e-1", "data": {"workflow": "invoice"}},
        {"type": "workflow.transition", "key": "inv-1", "id": "e-2", "data": {"to": "sent"}},
    ]
    status, body = post(worker.url, batch)
    assert (status, body) == (202, {"accepted": 2, "ids": ["e-1", "e-2"]})

    def caught_up() -> dict[str, str] | None:
        # The row is written while its record is handled, the offset once it is done: an
        # answer in between shows the new state with lag 1. Wait for the settled answer.
        code, headers, item = http_get(f"{worker.url}/v1/workflows/inv-1", ACME_KEY)
        settled = code == 200 and item["state"] == "sent"
        return headers if settled and headers.get("X-Statekeeper-Lag") == "0" else None

    headers = wait_for(caught_up, timeout=30)
    assert int(headers["X-Statekeeper-Offset"]) >= 1  # start and transition share a partition
    # Produced under the contract key, as a Kafka producer would have.
    status_records = await read_topic(
        deployment.bootstrap, deployment.topic("workflow.status"), until=2
    )
    assert [(k, r["version"]) for k, r in status_records] == [
        (b"acme/inv-1", 1),
        (b"acme/inv-1", 2),
    ]

    _, _, text = http_get(f"{worker.url}/metrics")
    lines = text.splitlines()
    posts = 'route="EventsView.post",method="POST",status="202"'
    assert f"statekeeper_http_request_duration_ms_count{{{posts}}} 2" in lines
    lags = [line for line in lines if line.startswith("statekeeper_consumer_lag{")]
    assert lags and all(line.endswith(" 0") for line in lags)
    items = [
        line for line in lines if line.startswith('statekeeper_table_keys{table="workflow-items"}')
    ]
    assert items and not items[0].endswith(" 0")


async def test_bad_posts_are_refused_and_nothing_is_produced(deployment: Deployment) -> None:
    keys = f"acme:{ACME_KEY},globex:{GLOBEX_KEY},acme:{READ_ONLY_KEY}:ro"
    worker = deployment.start(STATEKEEPER_API_KEYS=keys, STATEKEEPER_MAX_BODY_BYTES="4096")
    good = {"type": "workflow.start", "key": "x-1", "data": {"workflow": "invoice"}}

    status, body = post(worker.url, [good, {"type": "workflow.start", "key": "", "data": {}}])
    assert status == 400 and body["error"]["code"] == "invalid_envelope"
    assert "event 1" in body["error"]["message"] and "'key'" in body["error"]["message"]
    status, body = post(worker.url, {**good, "type": "workflow.teleport"})
    assert (status, body["error"]["code"]) == (400, "unknown_type")
    assert post(worker.url, {**good, "tenant": "globex"})[0] == 403
    assert post(worker.url, good, api_key=READ_ONLY_KEY)[0] == 403
    assert post(worker.url, good, api_key=None)[0] == 401
    assert post(worker.url, good, api_key="not-a-key-at-all-000")[0] == 401
    assert post(worker.url, None, raw=b"{not json")[0] == 400
    assert post(worker.url, [])[0] == 400
    big = {**good, "data": {"workflow": "invoice", "attrs": {"note": "x" * 5000}}}
    status, body = post(worker.url, big)
    assert (status, body["error"]["code"]) == (413, "too_large")
    # The read-only key still reads.
    assert http_get(f"{worker.url}/v1/workflows/x-1", READ_ONLY_KEY)[0] == 404

    # None of the refused requests produced anything: the first good post is offset 0.
    assert post(worker.url, good)[0] == 202
    records = await read_topic(
        deployment.bootstrap, deployment.topic("workflow.events"), until=2, timeout=5
    )
    assert [r["key"] for _, r in records] == ["x-1"]
