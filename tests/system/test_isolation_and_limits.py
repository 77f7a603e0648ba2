"""Security beyond HTTP (tests/integration/test_security.py covers the endpoints): tenants
over every topic, no pickle anywhere, a limit on every size a client controls, no secret in
the log or /metrics."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgpack
import pytest

import statekeeper
from tests.integration.conftest import ACME_KEY, GLOBEX_KEY, Deployment
from tests.support.kafka import envelope, pack, produce
from tests.support.mixed_model import MixedModel, MixedStream
from tests.support.model import REWORK
from tests.support.worker import http_get, wait_for
from tests.system.conftest import define_rework, read_raw, send_mixed, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.system]

SAME = "shared-1"  # the same entity id in both tenants


def both_tenants_events() -> list[tuple[str, dict[str, Any]]]:
    """acme creates each kind of entity; globex then changes and ends its own of the same id."""
    msg = {"conversation": "c", "role": "user", "content": "acme private words"}
    acme = [
        (
            "workflow.events",
            envelope("workflow.start", SAME, {"workflow": "invoice", "attrs": {"a": 1}}),
        ),
        ("session.events", envelope("session.start", SAME, {"user": "u", "data": {"a": 1}})),
        ("conversation.events", envelope("conversation.message", SAME, msg)),
        ("lifecycle.events", envelope("resource.register", SAME, {"kind": "file"})),
    ]
    g = {"tenant": "globex"}
    other = {"conversation": "c", "role": "user", "content": "globex words"}
    globex = [
        ("workflow.events", envelope("workflow.start", SAME, {"workflow": "invoice"}, **g)),
        ("workflow.events", envelope("workflow.annotate", SAME, {"attrs": {"a": 2}}, **g)),
        ("workflow.events", envelope("workflow.cancel", SAME, {}, **g)),
        ("session.events", envelope("session.start", SAME, {"user": "g"}, **g)),
        ("session.events", envelope("session.update", SAME, {"data": {"a": 2}}, **g)),
        ("session.events", envelope("session.end", SAME, {}, **g)),
        ("conversation.events", envelope("conversation.message", SAME, other, **g)),
        ("conversation.events", envelope("conversation.forget", SAME, {}, **g)),
        ("lifecycle.events", envelope("resource.register", SAME, {"kind": "vm"}, **g)),
        ("lifecycle.events", envelope("resource.release", SAME, {}, **g)),
    ]
    return acme + globex


async def test_tenants_never_cross_on_any_topic(deployment: Deployment) -> None:
    worker = start_worker(deployment)
    definitions = [
        envelope("workflow.define", "invoice", REWORK, tenant=t) for t in ("acme", "globex")
    ]
    await produce(
        deployment.bootstrap,
        deployment.topic("workflow.definitions"),
        [(f"{e['tenant']}/invoice".encode(), pack(e)) for e in definitions],
    )
    await send_mixed(
        deployment.bootstrap, deployment, MixedStream(both_tenants_events(), MixedModel())
    )
    # Records keyed under acme's key that carry globex's envelope: routed by the envelope.
    crossed = {
        "workflow.events": envelope(
            "workflow.start", "crossed", {"workflow": "invoice"}, tenant="globex"
        ),
        "session.events": envelope("session.start", "crossed", {"user": "g"}, tenant="globex"),
        "lifecycle.events": envelope(
            "resource.register", "crossed", {"kind": "vm"}, tenant="globex"
        ),
    }
    for suffix, event in crossed.items():
        await produce(
            deployment.bootstrap, deployment.topic(suffix), [(b"acme/crossed", pack(event))]
        )

    def get(path: str, key: str = ACME_KEY) -> tuple[int, Any]:
        status, _, body = http_get(f"{worker.url}{path}", key)
        return status, body

    # globex's view settles first: its events were sent last.
    wait_for(lambda: get("/v1/resources/crossed", GLOBEX_KEY)[0] == 200, timeout=60)
    wait_for(
        lambda: get(f"/v1/workflows/{SAME}", GLOBEX_KEY)[1].get("condition") == "cancelled",
        timeout=60,
    )
    wait_for(lambda: get(f"/v1/resources/{SAME}", GLOBEX_KEY)[0] == 404, timeout=60)
    wait_for(lambda: get(f"/v1/sessions/{SAME}", GLOBEX_KEY)[0] == 404, timeout=60)
    item = get(f"/v1/workflows/{SAME}")[1]
    assert (item["version"], item["condition"], item["attrs"]) == (1, "active", {"a": 1})
    session = get(f"/v1/sessions/{SAME}")[1]
    assert (session["version"], session["data"], session["user"]) == (1, {"a": 1}, "u")
    messages = get(f"/v1/conversations/{SAME}/messages")[1]["messages"]
    assert [m["content"] for m in messages] == ["acme private words"]
    assert get(f"/v1/resources/{SAME}")[1]["kind"] == "file"
    for path in ("workflows", "sessions", "resources"):
        assert get(f"/v1/{path}/crossed")[0] == 404, path  # never under acme
        assert get(f"/v1/{path}/crossed", GLOBEX_KEY)[0] == 200, path
    notices = [
        msgpack.unpackb(raw)
        for _, raw in await read_raw(deployment.bootstrap, deployment.topic("lifecycle.notices"))
    ]
    assert notices and {n["tenant"] for n in notices} == {"globex"}
    assert "acme private" not in json.dumps(notices, default=str)


def test_no_pickle_or_marshal_in_the_package() -> None:
    root = Path(statekeeper.__file__).parent
    modules = r"(c?pickle|marshal|dill|shelve|jsonpickle)"
    pattern = re.compile(rf"\b(import {modules}|from {modules} import|pickle\.|marshal\.)")
    offenders = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in root.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
    assert len(list(root.rglob("*.py"))) > 50  # the walk really saw the package


def pickled(value: bytes) -> bool:
    """Pickle protocols 2-5 begin with PROTO (0x80) and the protocol number."""
    return len(value) > 1 and value[0] == 0x80 and 2 <= value[1] <= 5


async def test_no_topic_value_is_a_pickle(deployment: Deployment) -> None:
    """Every topic the deployment wrote (inputs, outputs, every table changelog)."""
    from aiokafka.admin import AIOKafkaAdminClient

    worker = start_worker(deployment)
    await send_mixed(
        deployment.bootstrap, deployment, MixedStream(both_tenants_events(), MixedModel())
    )
    wait_for(lambda: http_get(f"{worker.url}/v1/resources/{SAME}", ACME_KEY)[0] == 200, timeout=60)
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
    await admin.start()
    try:
        names = await admin.list_topics()
    finally:
        await admin.close()
    app_id = deployment.env["STATEKEEPER_APP_ID"]
    ours = [t for t in names if t.startswith((deployment.prefix, app_id))]
    assert any("changelog" in t for t in ours)
    values = 0
    for topic in ours:
        for key, value in await read_raw(deployment.bootstrap, topic):
            assert not pickled(value) and not pickled(key), topic
            values += 1
    assert values > 20


def post(url: str, body: bytes, api_key: str = ACME_KEY) -> int:
    request = urllib.request.Request(
        f"{url}/v1/events",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return err.code


def oversized_inputs(limit: int) -> list[tuple[str, dict[str, Any], set[str]]]:
    """(topic suffix, envelope, acceptable reasons): one per size a client controls."""
    big = "x" * (limit + 10)
    many = {f"f{n}": n for n in range(300)}
    return [
        (
            "workflow.events",
            envelope("workflow.start", "w-big", {"workflow": "invoice", "attrs": {"a": big}}),
            {"oversize"},
        ),
        (
            "workflow.events",
            envelope(
                "workflow.start",
                "w-attrs",
                {"workflow": "invoice", "attrs": {f"a{n}": n for n in range(65)}},
            ),
            {"invalid_data"},
        ),
        (
            "workflow.events",
            envelope("workflow.start", "k" * 257, {"workflow": "invoice"}),
            {"invalid_envelope"},
        ),
        (
            "workflow.events",
            envelope("workflow.start", "w-id", {"workflow": "invoice"}, id="i" * 129),
            {"invalid_envelope"},
        ),
        (
            "session.events",
            envelope("session.start", "s-fields", {"user": "u", "data": many}),
            {"session_too_large"},
        ),
        (
            "session.events",
            envelope("session.start", "s-bytes", {"user": "u", "data": {"a": "y" * 60_000}}),
            {"session_too_large"},
        ),
        (
            "session.events",
            envelope("session.start", "s-big", {"user": "u", "data": {"a": big}}),
            {"oversize"},
        ),
        (
            "conversation.events",
            envelope(
                "conversation.message",
                "c-big",
                {"conversation": "c", "role": "user", "content": big},
            ),
            {"oversize"},
        ),
        (
            "conversation.events",
            envelope(
                "conversation.message",
                "c-conv",
                {"conversation": "c" * 300, "role": "user", "content": "x"},
            ),
            {"invalid_data"},
        ),
        (
            "lifecycle.events",
            envelope("resource.register", "r-meta", {"kind": "file", "meta": {"a": "z" * 20_000}}),
            {"invalid_data"},
        ),
        (
            "lifecycle.events",
            envelope("resource.register", "r-kind", {"kind": "k" * 65}),
            {"invalid_data"},
        ),
        (
            "lifecycle.events",
            envelope("resource.register", "r-big", {"kind": "file", "meta": {"a": big}}),
            {"oversize"},
        ),
    ]


async def test_every_client_controlled_size_has_a_limit(deployment: Deployment) -> None:
    # Session bytes below the event limit, so 60 KB of data passes the envelope and hits it.
    worker = start_worker(deployment, STATEKEEPER_SESSION_MAX_BYTES="16384")
    await define_rework(deployment.bootstrap, deployment)
    limit = int(deployment.env["STATEKEEPER_MAX_EVENT_BYTES"])
    cases = oversized_inputs(limit)
    for suffix, event, _ in cases:
        await produce(
            deployment.bootstrap,
            deployment.topic(suffix),
            [(f"acme/{event['key']}".encode(), pack(event))],
        )
    letters: dict[str, str] = {}

    async def collected() -> bool:
        for _, raw in await read_raw(deployment.bootstrap, deployment.topic("deadletter")):
            letter = msgpack.unpackb(raw)
            event = letter["event"]
            event_id = event["id"] if isinstance(event, dict) else msgpack.unpackb(event)["id"]
            letters[event_id] = letter["reason"]
        return len(letters) >= len(cases)

    for _ in range(60):
        if await collected():
            break
    for suffix, event, reasons in cases:
        assert letters.get(event["id"]) in reasons, (
            suffix,
            event["key"][:20],
            letters.get(event["id"]),
        )
    # HTTP: the body limit, an event over the event limit, query and path sizes.
    body_limit = 4 * 2**20
    assert post(worker.url, b"[" + b" " * body_limit + b"]") == 413
    one = {
        "type": "session.start",
        "key": "h",
        "data": {"user": "u", "data": {"a": "q" * (limit + 1)}},
    }
    assert post(worker.url, json.dumps(one).encode()) == 413
    assert (
        post(
            worker.url,
            json.dumps(
                [{"type": "session.start", "key": "h", "data": {"user": "u"}}] * 1001
            ).encode(),
        )
        == 400
    )
    assert http_get(f"{worker.url}/v1/workflows?limit=100000", ACME_KEY)[0] == 400
    assert http_get(f"{worker.url}/v1/workflows/{'k' * 5000}", ACME_KEY)[0] in (400, 404)


SECRETS = {
    "STATEKEEPER_KAFKA_SASL_PASSWORD": "sasl-pw-9f8e7d6c5b",
    "STATEKEEPER_REDIS_PASSWORD": "redis-pw-1a2b3c4d5e",
}
URL_PASSWORD = "url-pw-0q9w8e7r6t"


async def test_secrets_never_reach_the_log_or_metrics(deployment: Deployment) -> None:
    redis_url = deployment.infra.redis_url.replace("redis://", f"redis://:{URL_PASSWORD}@")
    worker = start_worker(
        deployment, STATEKEEPER_REDIS_URL=redis_url, STATEKEEPER_LOG_LEVEL="debug", **SECRETS
    )
    await produce(
        deployment.bootstrap,
        deployment.topic("workflow.definitions"),
        [(b"acme/invoice", pack(envelope("workflow.define", "invoice", REWORK)))],
    )
    # Work that reaches Redis (a report; it fails: the shared Redis has no password), bad
    # keys, a post, a forwarded query.
    reports = [
        http_get(f"{worker.url}/v1/reports/workflow?workflow=invoice", ACME_KEY)[0]
        for _ in range(3)
    ]
    assert set(reports) <= {200, 404}, reports  # answered (404 until the definition is read)
    http_get(f"{worker.url}/v1/workflows/x", "sk-wrong-key-0123456789")
    assert (
        post(
            worker.url,
            json.dumps({"type": "session.start", "key": "s", "data": {"user": "u"}}).encode(),
        )
        == 202
    )
    wait_for(lambda: http_get(f"{worker.url}/v1/sessions/s", ACME_KEY)[0] == 200, timeout=60)
    metrics = http_get(f"{worker.url}/metrics")[2]
    worker.stop()
    log = worker.log_path.read_text(errors="replace")
    for secret in [
        *SECRETS.values(),
        URL_PASSWORD,
        ACME_KEY,
        GLOBEX_KEY,
        "sk-wrong-key-0123456789",
    ]:
        assert secret not in log, f"{secret[:6]}… in the worker log"
        assert secret not in metrics, f"{secret[:6]}… in /metrics"
