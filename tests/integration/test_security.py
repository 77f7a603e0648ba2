"""Every endpoint, called with no key, a wrong key and another tenant's key: nothing leaks.

The entities are created for tenant ``acme`` through every pattern; the calls are derived
from /openapi.json, so an endpoint added later is covered without touching this test.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.conftest import ACME_KEY, GLOBEX_KEY, Deployment
from tests.integration.test_events_api import post
from tests.integration.test_workflow_slice import INVOICE
from tests.support.worker import http_get, wait_for

pytestmark = pytest.mark.integration

MARK = "zq7secret"  # in every id and text of acme's data; must never reach another caller
ENTITY_PATHS = {  # path parameter -> acme's entity
    "item": f"{MARK}-item",
    "session": f"{MARK}-session",
    "user": f"{MARK}-user",
    "resource": f"{MARK}-res",
    "name": "workflow",
}
QUERY = {"budget_tokens": "200", "q": MARK, "workflow": "invoice"}
NOT_DATA = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/dashboard")
ENDLESS = ("/v1/dashboard/stream",)


def acme_events() -> list[dict[str, Any]]:
    return [
        {"type": "workflow.define", "key": "invoice", "data": INVOICE},
        {"type": "workflow.start", "key": ENTITY_PATHS["item"], "data": {"workflow": "invoice"}},
        {
            "type": "session.start",
            "key": ENTITY_PATHS["session"],
            "data": {"user": f"{MARK}-u", "data": {"email": f"{MARK}@example.com"}},
        },
        {
            "type": "conversation.message",
            "key": ENTITY_PATHS["user"],
            "data": {"conversation": "c1", "role": "user", "content": f"the {MARK} plan"},
        },
        {
            "type": "resource.register",
            "key": ENTITY_PATHS["resource"],
            "data": {"kind": "file", "ttl_s": 3600, "size_bytes": 10},
        },
    ]


def data_urls(spec: dict[str, Any], base: str) -> list[str]:
    urls = []
    for path, operations in spec["paths"].items():
        if "get" not in operations or path in NOT_DATA or path in ENDLESS:
            continue
        params = operations["get"].get("parameters", [])
        concrete = path
        query = []
        for param in params:
            if param["in"] == "path":
                concrete = concrete.replace("{" + param["name"] + "}", ENTITY_PATHS[param["name"]])
            elif param["name"] in QUERY:
                query.append(f"{param['name']}={QUERY[param['name']]}")
        urls.append(f"{base}{concrete}" + (f"?{'&'.join(query)}" if query else ""))
    return urls


async def test_no_key_wrong_key_or_another_tenant_sees_nothing(deployment: Deployment) -> None:
    worker = deployment.start()
    status, _ = post(worker.url, acme_events())
    assert status == 202
    wait_for(
        lambda: all(
            http_get(f"{worker.url}/v1/{family}/{ENTITY_PATHS[param]}", ACME_KEY)[0] == 200
            for family, param in (
                ("workflows", "item"),
                ("sessions", "session"),
                ("resources", "resource"),
            )
        ),
        timeout=60,
    )
    _, _, spec = http_get(f"{worker.url}/openapi.json")
    urls = data_urls(spec, worker.url)
    assert len(urls) >= 14

    seen_by_owner = 0
    for url in urls:
        owner_status, _, owner_body = http_get(url, ACME_KEY)
        assert owner_status in (200, 404), (url, owner_status, owner_body)
        seen_by_owner += MARK in json.dumps(owner_body)
        for key in (None, "wrong-key-0123456789abcdef"):
            status, _, body = http_get(url, key)
            assert status == 401, (url, key, status)
            assert set(body) == {"error"} and MARK not in json.dumps(body), url
        status, _, body = http_get(url, GLOBEX_KEY)
        assert status in (200, 404), (url, status, body)
        if status == 200:
            assert MARK not in json.dumps(body), (url, body)
        else:  # exactly like a missing entity (a 404 may echo the id the caller sent)
            _, _, missing = http_get(url.replace(MARK, "no-such-entity"), GLOBEX_KEY)
            assert json.dumps(body).replace(MARK, "no-such-entity") == json.dumps(missing), url
        if f"/{MARK}" in url:  # another tenant's entity is never found
            assert status == 404, url
    # The owner saw its data through most endpoints, so the checks above could have failed.
    assert seen_by_owner >= 8

    _, _, metrics_text = http_get(f"{worker.url}/metrics")
    assert MARK not in metrics_text
