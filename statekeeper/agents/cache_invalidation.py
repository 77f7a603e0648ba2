"""Cached results built from a workflow's state go stale when the workflow changes.

A task on every worker reads ``statekeeper.workflow.status`` in the consumer group
``{app id}-cache-invalidation`` (so each status record is seen by one worker; the tag
tokens it replaces live in Redis, shared by all) and invalidates the tag
``workflow:{name}`` of the record's tenant. It writes no table, so it reads in bulk with
aiokafka rather than through faust's per-record stream, which could not keep up with the
batched workflow path. Bursts are debounced per (tenant, tag): the first change
invalidates at once, later ones within ``STATEKEEPER_CACHE_INVALIDATION_DEBOUNCE_S`` are
folded into one invalidation at the end of that window, so a change is never later than
the window to take effect.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer

from statekeeper import codec
from statekeeper.app import app
from statekeeper.connections import kafka_options
from statekeeper.metrics import metrics
from statekeeper.stores.cache import cache

logger = logging.getLogger(__name__)

Invalidate = Callable[[str, Iterable[str]], Awaitable[None]]


class Debouncer:
    """At most one invalidation per (tenant, tag) per window; none is ever dropped."""

    def __init__(self, window_s: float, invalidate: Invalidate) -> None:
        self.window_s = window_s
        self.invalidate = invalidate
        self._last: dict[tuple[str, str], float] = {}
        self._scheduled: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending = 0

    def note(self, tenant: str, tag: str) -> None:
        """A change for ``tag``: invalidate now, or once at the end of the current window."""
        key = (tenant, tag)
        if key in self._scheduled:
            return  # folded into the invalidation already scheduled
        self._scheduled.add(key)
        self._report()
        delay = self._last.get(key, -math.inf) + self.window_s - time.monotonic()
        task = asyncio.ensure_future(self._fire(key, max(0.0, delay)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fire(self, key: tuple[str, str], delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        self._scheduled.discard(key)  # changes from now on need another invalidation
        self._sending += 1
        now = time.monotonic()
        self._last[key] = now
        if len(self._last) > 10_000:
            self._forget_before(now - self.window_s)
        tenant, tag = key
        try:
            await self.invalidate(tenant, [tag])
        except Exception:  # Cache.invalidate does not raise; a bug must not stop the agent
            logger.exception("invalidating %s for %s failed", tag, tenant)
        finally:
            self._sending -= 1
            self._report()

    def _report(self) -> None:
        metrics.cache.invalidations_scheduled = len(self._scheduled) + self._sending

    def _forget_before(self, horizon: float) -> None:
        self._last = {k: t for k, t in self._last.items() if t >= horizon}


debouncer = Debouncer(app.settings.cache_invalidation_debounce_s, cache.invalidate)


@app.task
async def cache_invalidation() -> None:
    """Invalidate ``workflow:{name}`` of the tenant for every status record."""
    consumer = AIOKafkaConsumer(
        app.topic_names.workflow_status,
        **kafka_options(app.settings),
        group_id=f"{app.settings.app_id}-cache-invalidation",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while True:
            fetched = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in fetched.values():
                for record in records:
                    note_status(record.value)
            if fetched:
                await consumer.commit()
    finally:
        await consumer.stop()


def note_status(value: bytes | None) -> None:
    """Schedule the invalidation one status record calls for."""
    try:  # our own records (the workers write the topic): no nesting check, but no trust
        record = codec.unpack_stored(value) if value is not None else None
        tenant, workflow = record["tenant"], record["workflow"]  # type: ignore[index]
    except Exception:  # msgpack raises several unrelated types on bad bytes
        logger.warning("status record without tenant and workflow ignored")
        return
    if isinstance(tenant, str) and isinstance(workflow, str):
        debouncer.note(tenant, f"workflow:{workflow}")
