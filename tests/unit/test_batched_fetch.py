"""The batched runner takes records that arrive while its batch in flight is acknowledged.

What is tested is the runner's waiting (``BatchedInput._fetch``), with a consumer that hands
out records when the test says so; the integration and system tests run the same runner
against the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import TopicPartition

from statekeeper.agents import workflow
from statekeeper.agents.batched import BatchedInput, InFlight, all_done

TP = TopicPartition("events", 0)


class HeldConsumer:
    """``getmany`` answers once :meth:`deliver` is called; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.ready = asyncio.Event()
        self.records: dict[TopicPartition, list[Any]] = {}

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        self.calls += 1
        await self.ready.wait()
        self.ready.clear()
        records, self.records = self.records, {}
        return records

    def deliver(self, *records: str) -> None:
        self.records = {TP: list(records)}
        self.ready.set()


@pytest.fixture
def runner() -> Iterator[BatchedInput]:
    runner = workflow.runner
    saved = runner.consumer, runner.in_flight, runner.fetching
    yield runner
    runner.consumer, runner.in_flight, runner.fetching = saved


def in_flight(ack: asyncio.Future[Any]) -> InFlight:
    sent = [(("status", 0), [(1, ack)])]
    return InFlight(batches=[], sent=sent, changelogs={}, landed=all_done([ack]))


async def test_records_arriving_before_the_acknowledgement_are_taken_at_once(
    runner: BatchedInput,
) -> None:
    consumer = HeldConsumer()
    ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    runner.consumer, runner.in_flight = consumer, in_flight(ack)  # type: ignore[assignment]
    fetch = asyncio.ensure_future(runner._fetch())
    await asyncio.sleep(0.01)
    assert not fetch.done()  # neither records nor the acknowledgement yet
    consumer.deliver("r1", "r2")
    assert await asyncio.wait_for(fetch, 1) == {TP: ["r1", "r2"]}
    assert not ack.done() and runner.fetching is None


async def test_a_fetch_still_waiting_when_the_batch_lands_is_kept_for_the_next_call(
    runner: BatchedInput,
) -> None:
    consumer = HeldConsumer()
    ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    runner.consumer, runner.in_flight = consumer, in_flight(ack)  # type: ignore[assignment]
    fetch = asyncio.ensure_future(runner._fetch())
    await asyncio.sleep(0.01)
    ack.set_result(None)
    assert await asyncio.wait_for(fetch, 1) == {}  # the caller finishes the batch now
    assert runner.fetching is not None and not runner.fetching.done()
    runner.in_flight = None
    later = asyncio.ensure_future(runner._fetch())
    await asyncio.sleep(0.01)
    consumer.deliver("r3")
    assert await asyncio.wait_for(later, 1) == {TP: ["r3"]}
    assert consumer.calls == 1  # the same fetch, not a second one beside it
    assert runner.fetching is None


async def test_a_failed_acknowledgement_ends_the_wait_too(runner: BatchedInput) -> None:
    consumer = HeldConsumer()
    ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    runner.consumer, runner.in_flight = consumer, in_flight(ack)  # type: ignore[assignment]
    fetch = asyncio.ensure_future(runner._fetch())
    await asyncio.sleep(0.01)
    ack.set_exception(RuntimeError("refused"))
    assert await asyncio.wait_for(fetch, 1) == {}  # _finish awaits the ack and reads again
    ack.exception()  # retrieved, as _finish would


async def test_dropping_the_waiting_fetch_discards_what_it_returns(runner: BatchedInput) -> None:
    consumer = HeldConsumer()
    runner.consumer = consumer  # type: ignore[assignment]
    runner.fetching = asyncio.ensure_future(consumer.getmany(timeout_ms=100, max_records=10))
    await asyncio.sleep(0.01)
    drop = asyncio.ensure_future(runner._drop_fetch())
    await asyncio.sleep(0.01)
    assert not drop.done()  # it waits for the fetch under way: the seek comes after it
    consumer.deliver("stale")
    await asyncio.wait_for(drop, 1)
    assert runner.fetching is None
    runner.in_flight = None
    fresh = asyncio.ensure_future(runner._fetch())
    await asyncio.sleep(0.01)
    consumer.deliver("r4")
    assert await asyncio.wait_for(fresh, 1) == {TP: ["r4"]}


async def test_all_done_waits_for_every_future_failed_or_not() -> None:
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    done = all_done([first, second])
    first.set_exception(RuntimeError("refused"))
    await asyncio.sleep(0)
    assert not done.done()
    second.set_result(1)
    await asyncio.sleep(0)
    assert done.done() and done.result() is None
    assert isinstance(first.exception(), RuntimeError)
    assert all_done([]).done()
