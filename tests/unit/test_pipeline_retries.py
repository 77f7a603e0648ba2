"""A changelog topic whose metadata is not known yet is waited out, not dead-lettered."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.exceptions import PartitionsMismatch

from statekeeper.agents import pipeline
from statekeeper.agents.pipeline import METADATA_RETRIES, EventPipeline
from statekeeper.topics.envelope import Envelope


def test_each_try_after_the_first_waits_and_the_last_error_goes_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    async def handler(envelope: Envelope) -> bool:
        calls.append("try")
        raise PartitionsMismatch("no partitions yet")

    async def sleep(seconds: float) -> None:
        calls.append("sleep")

    app: Any = SimpleNamespace(settings=SimpleNamespace(max_event_bytes=1024, partitions=8))
    runner = EventPipeline(app, "t", frozenset({"x.y"}), handler)
    record: Any = SimpleNamespace(message=SimpleNamespace(topic="t", partition=0, offset=1))
    envelope = Envelope("id", "x.y", "acme", "k", 0)
    monkeypatch.setattr(pipeline.asyncio, "sleep", sleep)
    with pytest.raises(PartitionsMismatch):
        asyncio.run(runner._handle_again(record, envelope, PartitionsMismatch("first")))
    assert calls == ["sleep", "try"] * METADATA_RETRIES  # after the caller's own first try
