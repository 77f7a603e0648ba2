"""Conversation memory end to end: events over Kafka, answers over HTTP, real workers."""

from __future__ import annotations

import datetime as dt
import shutil
import time
import urllib.parse
from typing import Any

import msgpack
import pytest
import redis

from tests.integration.conftest import ACME_KEY, GLOBEX_KEY, Deployment
from tests.support.kafka import envelope, read_topic, send_envelopes
from tests.support.worker import WorkerProcess, http_get, wait_for

pytestmark = pytest.mark.integration


def _day_ms(weekday: int, hour: int) -> int:
    """Last week's ``weekday`` (0 = Monday) at ``hour`` UTC, in ms (inside default retention)."""
    today = dt.datetime.now(dt.UTC).date()
    day = today - dt.timedelta(days=today.weekday() + 7 - weekday)
    moment = dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


MONDAY, TUESDAY = _day_ms(0, 10), _day_ms(1, 9)


def say(
    user: str,
    conversation: str,
    role: str,
    content: str,
    ts: int,
    tenant: str = "acme",
    **data: Any,
) -> dict[str, Any]:
    body = {"conversation": conversation, "role": role, "content": content, **data}
    return envelope("conversation.message", user, body, tenant=tenant, ts=ts)


async def send(dep: Deployment, events: list[dict[str, Any]]) -> None:
    await send_envelopes(dep.bootstrap, dep.topic("conversation.events"), events)


def get(worker: WorkerProcess, user: str, path: str, key: str = ACME_KEY, **query: Any) -> Any:
    url = f"{worker.url}/v1/conversations/{user}/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    return http_get(url, key)


def messages_when(worker: WorkerProcess, user: str, count: int, key: str = ACME_KEY) -> list[Any]:
    def check() -> list[Any] | None:
        status, _, body = get(worker, user, "messages", key, limit=500)
        if status == 200 and len(body["messages"]) == count:
            return list(body["messages"])
        return None

    return wait_for(check, timeout=60)


def contents(items: list[dict[str, Any]]) -> list[str]:
    return [item["content"] for item in items]


def shown(context: dict[str, Any]) -> str:
    """Everything a context answer hands to a model (not the echoed query)."""
    return str([context["recent"], context["relevant"], context["summary"]])


async def test_context_brings_back_what_matters_from_another_conversation(
    deployment: Deployment,
) -> None:
    worker = deployment.start()
    monday = [
        say("ann", "A", "user", "My dog Biscuit is allergic to chicken.", MONDAY),
        say("ann", "A", "assistant", "Noted: no chicken for Biscuit.", MONDAY + 1000),
        say("ann", "A", "user", "I also like hiking in the Alps.", MONDAY + 2000),
    ]
    small_talk = [
        say("ann", "B", "user" if i % 2 else "assistant", f"Chat line {i} on trains.", TUESDAY + i)
        for i in range(30)
    ]
    question = say("ann", "B", "user", "Which dog food should I buy for Biscuit?", TUESDAY + 99)
    await send(deployment, monday + small_talk + [question])
    messages_when(worker, "ann", 34)

    status, _, context = get(worker, "ann", "context", budget_tokens=150, conversation="B")

    assert status == 200
    assert contents(context["recent"])[-1] == question["data"]["content"]
    assert {m["conversation"] for m in context["recent"]} == {"B"}
    assert "My dog Biscuit is allergic to chicken." in contents(context["relevant"])
    assert context["summary"] is not None  # the older train chat, summarized
    assert context["summary"]["covers"]["messages"] > 0
    assert context["used_tokens"] <= context["budget_tokens"] == 150
    parts = context["parts"]
    assert (
        parts["recent_tokens"] + parts["relevant_tokens"] + parts["summary_tokens"]
        == (context["used_tokens"])
    )

    for budget in (1, 5, 23, 64, 400, 2_000, 100_000):
        status, _, body = get(worker, "ann", "context", budget_tokens=budget, conversation="B")
        assert status == 200 and body["used_tokens"] <= budget

    # a query picks what is relevant to it instead of the latest turn
    status, _, body = get(worker, "ann", "context", budget_tokens=150, query="hiking Alps")
    assert "I also like hiking in the Alps." in contents(body["relevant"])

    # the summary is cached, and refreshed once the conversation grows
    _, _, again = get(worker, "ann", "context", budget_tokens=150, conversation="B")
    assert again["summary"]["cache"] == "hit"
    await send(deployment, [say("ann", "B", "assistant", "Try a salmon recipe.", TUESDAY + 200)])
    messages_when(worker, "ann", 35)
    _, _, grown = get(worker, "ann", "context", budget_tokens=150, conversation="B")
    assert grown["summary"]["cache"] == "miss"

    status, _, found = get(worker, "ann", "search", q="Biscuit allergic")
    assert status == 200
    assert found["results"][0]["content"] == "My dog Biscuit is allergic to chicken."
    assert all(r["score"] > 0 for r in found["results"])


async def test_messages_page_newest_last_and_redelivery_has_no_effect(
    deployment: Deployment,
) -> None:
    worker = deployment.start()
    events = []
    for i in range(12):
        events.append(say("bob", "p", "user", f"page message {i}", TUESDAY + i))
        events.append(say("bob", "q", "user", f"other conversation {i}", TUESDAY + i))
    events.append({**events[0]})  # the same event id again: no effect
    await send(deployment, events)
    messages_when(worker, "bob", 24)

    pages = []
    before: int | None = None
    while True:
        query: dict[str, Any] = {"conversation": "p", "limit": 5}
        if before is not None:
            query["before"] = before
        status, _, body = get(worker, "bob", "messages", **query)
        assert status == 200
        pages.append(contents(body["messages"]))
        before = body["next_before"]
        if before is None:
            break

    assert pages == [
        [f"page message {i}" for i in range(7, 12)],
        [f"page message {i}" for i in range(2, 7)],
        ["page message 0", "page message 1"],
    ]
    assert get(worker, "bob", "messages", conversation="nope")[0] == 404
    assert get(worker, "nobody", "messages")[0] == 404


async def test_forget_leaves_nothing_behind_across_restarts_and_rebuilds(
    deployment: Deployment,
) -> None:
    worker = deployment.start()
    secret = [
        say("cy", "A", "user", f"Passport zebra{i}. My bank is Quokka.", MONDAY + i)
        for i in range(25)
    ]
    kept = [
        say("cy", "B", "user", f"Let us plan the garden, step {i}.", TUESDAY + i) for i in range(5)
    ]
    other_user = [say("dee", "A", "user", "Dee keeps this message.", TUESDAY)]
    await send(deployment, secret + kept + other_user)
    messages_when(worker, "cy", 30)
    messages_when(worker, "dee", 1)
    _, _, primed = get(worker, "cy", "context", budget_tokens=120, conversation="A")
    assert "Quokka" in primed["summary"]["text"]  # a cached summary built on A
    assert get(worker, "cy", "search", q="Quokka")[2]["results"]

    await send(deployment, [envelope("conversation.forget", "cy", {"conversation": "A"})])
    notices = await read_topic(deployment.bootstrap, deployment.topic("lifecycle.notices"), until=1)
    assert [n["type"] for _, n in notices] == ["conversation.forgotten"]
    receipt = notices[0][1]
    assert receipt["removed"]["messages"] == 25 and receipt["removed"]["cached_results"] >= 1
    # RocksDB follows the receipt within milliseconds (the batched path), then it all holds.
    wait_for(lambda: get(worker, "cy", "messages", conversation="A")[0] == 404)
    assert_forgotten_conversation(worker)
    assert_nothing_cached(deployment, "Quokka")

    worker.stop()
    worker = deployment.start()
    assert_forgotten_conversation(worker)

    _, _, garden = get(worker, "cy", "context", budget_tokens=60, conversation="B")
    assert "garden" in garden["summary"]["text"]
    await send(deployment, [envelope("conversation.forget", "cy", {})])
    wait_for(lambda: get(worker, "cy", "messages")[0] == 404, timeout=60)
    worker.stop()
    shutil.rmtree(deployment.root / "w0")  # data dir gone: rebuilt from the changelogs
    worker = deployment.start()

    assert contents(messages_when(worker, "dee", 1)) == ["Dee keeps this message."]
    for path, query in (
        ("messages", {}),
        ("search", {"q": "Quokka garden"}),
        ("context", {"budget_tokens": 500}),
    ):
        assert get(worker, "cy", path, **query)[0] == 404
    assert_nothing_cached(deployment, "Quokka")
    assert_nothing_cached(deployment, "garden")


def assert_forgotten_conversation(worker: WorkerProcess) -> None:
    assert get(worker, "cy", "messages", conversation="A")[0] == 404
    status, _, body = get(worker, "cy", "messages")
    assert status == 200 and len(body["messages"]) == 5
    assert not any("Quokka" in m["content"] for m in body["messages"])
    assert get(worker, "cy", "search", q="Quokka passport zebra1")[2]["results"] == []
    _, _, context = get(worker, "cy", "context", budget_tokens=500, query="Quokka passport")
    assert "Quokka" not in shown(context)


def assert_nothing_cached(deployment: Deployment, word: str) -> None:
    client = redis.Redis.from_url(deployment.infra.redis_url)
    try:
        namespace = f"sk:{deployment.env['STATEKEEPER_APP_ID']}:c:"
        for key in client.scan_iter(match=namespace + "*"):
            raw = client.get(key)
            assert raw is None or word.encode() not in raw, key
            if raw is not None:
                assert word not in str(msgpack.unpackb(raw))
    finally:
        client.close()


async def test_same_user_id_in_two_tenants_never_meets(deployment: Deployment) -> None:
    worker = deployment.start()
    await send(
        deployment,
        [
            say("eve", "c", "user", "Acme Eve likes apples.", TUESDAY, tenant="acme"),
            say("eve", "c", "user", "Globex Eve likes grapes.", TUESDAY, tenant="globex"),
        ],
    )
    acme = messages_when(worker, "eve", 1, ACME_KEY)
    globex = messages_when(worker, "eve", 1, GLOBEX_KEY)
    assert contents(acme) == ["Acme Eve likes apples."]
    assert contents(globex) == ["Globex Eve likes grapes."]
    assert get(worker, "eve", "search", ACME_KEY, q="grapes")[2]["results"] == []
    _, _, context = get(worker, "eve", "context", GLOBEX_KEY, budget_tokens=1000, query="apples")
    assert "apples" not in shown(context)

    await send(deployment, [envelope("conversation.forget", "eve", {}, tenant="globex")])
    wait_for(lambda: get(worker, "eve", "messages", GLOBEX_KEY)[0] == 404, timeout=60)
    assert contents(messages_when(worker, "eve", 1, ACME_KEY)) == ["Acme Eve likes apples."]
    assert get(worker, "eve", "messages")[0] == 200
    assert http_get(f"{worker.url}/v1/conversations/eve/messages")[0] == 401


async def test_retention_purges_old_and_excess_messages(deployment: Deployment) -> None:
    worker = deployment.start(
        STATEKEEPER_RETENTION="*/conversation=1d;items=5",
        STATEKEEPER_CONVERSATION_CHECK_INTERVAL_S="0.3",
    )
    now = int(time.time() * 1000)
    stale = say("fay", "r", "user", "From two days ago.", now - 2 * 24 * 3600_000)
    fresh = [say("fay", "r", "user", f"fresh {i}", now + i) for i in range(7)]
    await send(deployment, [stale, *fresh])
    wanted = [f"fresh {i}" for i in range(2, 7)]

    def purged_to_five() -> bool:
        status, _, body = get(worker, "fay", "messages")
        return status == 200 and contents(body["messages"]) == wanted

    wait_for(purged_to_five, timeout=60)

    notices = await read_topic(deployment.bootstrap, deployment.topic("lifecycle.notices"), until=1)
    purged = [n for _, n in notices if n["type"] == "conversation.purged"]
    assert purged and sum(n["removed"]["messages"] for n in purged) >= 1
