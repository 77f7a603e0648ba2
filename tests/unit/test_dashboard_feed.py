"""The dashboard feed's fan-out: tenant filtering, bounded queues, recent changes, closing."""

from __future__ import annotations

from typing import Any

import pytest

from statekeeper.web.dashboard_feed import (
    MAX_SUBSCRIBERS,
    RECENT_PER_TENANT,
    FeedClosed,
    StatusFeed,
    Subscription,
)


def change(tenant: str, key: str, version: int = 1) -> dict[str, Any]:
    return {"tenant": tenant, "key": key, "version": version}


def subscribed(feed: StatusFeed, tenant: str) -> Subscription:
    """Register a subscription without a Kafka reader (dispatch is what is tested)."""
    subscription = Subscription(tenant, feed.queue_size)
    feed._by_tenant.setdefault(tenant, set()).add(subscription)
    return subscription


def new_feed(queue_size: int = 8) -> StatusFeed:
    return StatusFeed(lambda: pytest.fail("no Kafka in unit tests"), "status", queue_size)


async def drain(subscription: Subscription) -> list[dict[str, Any]]:
    found = []
    while (record := await subscription.next(0.01)) is not None:
        found.append(record)
    return found


async def test_each_subscription_gets_only_its_tenants_changes() -> None:
    feed = new_feed()
    acme, globex = subscribed(feed, "acme"), subscribed(feed, "globex")
    feed.dispatch([change("acme", "a-1"), change("globex", "g-1"), change("acme", "a-2")])
    assert [r["key"] for r in await drain(acme)] == ["a-1", "a-2"]
    assert [r["key"] for r in await drain(globex)] == ["g-1"]


async def test_a_slow_reader_loses_the_oldest_changes_and_is_told_how_many() -> None:
    feed = new_feed(queue_size=3)
    slow = subscribed(feed, "acme")
    feed.dispatch(change("acme", f"a-{n}") for n in range(10))
    assert [r["key"] for r in await drain(slow)] == ["a-7", "a-8", "a-9"]
    assert slow.take_dropped() == 7
    assert slow.take_dropped() == 0


async def test_recent_changes_are_kept_per_tenant_and_bounded() -> None:
    feed = new_feed()
    feed.dispatch(change("acme", f"a-{n}") for n in range(RECENT_PER_TENANT + 5))
    feed.dispatch([change("globex", "g-1"), {"no": "tenant"}])
    recent = list(feed._recent["acme"])
    assert len(recent) == RECENT_PER_TENANT
    assert recent[-1]["key"] == f"a-{RECENT_PER_TENANT + 4}"
    assert [r["key"] for r in feed._recent["globex"]] == ["g-1"]


async def test_stop_ends_every_stream_and_refuses_new_ones() -> None:
    feed = new_feed(queue_size=1)
    reader = subscribed(feed, "acme")
    feed.dispatch([change("acme", "a-1")])  # a full queue must not keep the close out
    await feed.stop()
    with pytest.raises(FeedClosed):
        await reader.next(1.0)
    with pytest.raises(FeedClosed):
        await feed.subscribe("acme")


async def test_unsubscribe_forgets_the_subscription() -> None:
    feed = new_feed()
    reader = subscribed(feed, "acme")
    feed.unsubscribe(reader)
    feed.unsubscribe(reader)
    feed.dispatch([change("acme", "a-1")])
    assert feed.subscribers == 0
    assert await reader.next(0.01) is None


async def test_a_full_worker_refuses_more_dashboards() -> None:
    feed = new_feed()
    for _ in range(MAX_SUBSCRIBERS):
        subscribed(feed, "acme")
    with pytest.raises(FeedClosed, match="already serves"):
        await feed.subscribe("acme")
