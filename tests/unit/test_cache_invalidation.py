"""Debounced invalidation: bursts fold into one trailing invalidation; none is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from statekeeper.agents.cache_invalidation import Debouncer


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.done = asyncio.Event()

    async def __call__(self, tenant: str, tags: Iterable[str]) -> None:
        self.calls.append((tenant, list(tags)))
        self.done.set()


async def until(recorder: Recorder, count: int) -> None:
    while len(recorder.calls) < count:
        recorder.done.clear()
        await asyncio.wait_for(recorder.done.wait(), timeout=10)


async def test_a_burst_becomes_one_immediate_and_one_trailing_invalidation() -> None:
    recorder = Recorder()
    debouncer = Debouncer(0.2, recorder)

    debouncer.note("acme", "workflow:invoice")
    await until(recorder, 1)  # the first change of a quiet tag goes out at once
    for _ in range(100):
        debouncer.note("acme", "workflow:invoice")
    await until(recorder, 2)

    assert recorder.calls == [("acme", ["workflow:invoice"])] * 2


async def test_tenants_and_tags_are_debounced_apart() -> None:
    recorder = Recorder()
    debouncer = Debouncer(0.2, recorder)

    for tenant, tag in [("acme", "workflow:a"), ("globex", "workflow:a"), ("acme", "workflow:b")]:
        debouncer.note(tenant, tag)
    await until(recorder, 3)

    assert sorted(recorder.calls) == [
        ("acme", ["workflow:a"]),
        ("acme", ["workflow:b"]),
        ("globex", ["workflow:a"]),
    ]


async def test_a_failing_invalidation_does_not_stop_later_ones() -> None:
    recorder = Recorder()
    failures = 0

    async def flaky(tenant: str, tags: Iterable[str]) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise RuntimeError("boom")
        await recorder(tenant, tags)

    debouncer = Debouncer(0.05, flaky)
    debouncer.note("acme", "workflow:a")
    while failures == 0:
        await asyncio.sleep(0.01)
    debouncer.note("acme", "workflow:a")
    await until(recorder, 1)

    assert recorder.calls == [("acme", ["workflow:a"])]
