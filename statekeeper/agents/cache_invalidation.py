"""Cached results built from a workflow's state go stale when the workflow changes.

The worker that applies a batch of workflow events invalidates the tag ``workflow:{name}``
of each (tenant, workflow) the batch changed, once the batch is in RocksDB (so a result
recomputed after the invalidation reads the new state; the tag tokens live in Redis, shared
by all workers). A batch read again after a crash invalidates again: its replayed records
count as changes here. Bursts are debounced per (tenant, tag): the first change
invalidates at once, later ones within ``STATEKEEPER_CACHE_INVALIDATION_DEBOUNCE_S`` are
folded into one invalidation at the end of that window, so a change is never later than
the window to take effect.

Until 2026-12 a task read ``statekeeper.workflow.status`` back for this, in the group
``{app id}-cache-invalidation``: a tenth of the worker's time went to decoding its own
output, and it could invalidate before RocksDB had the batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable

from statekeeper.app import app
from statekeeper.metrics import metrics
from statekeeper.stores.cache import cache
from statekeeper.stores.staged import Staging

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


def note_change(batch: Staging, tenant: str, workflow: str) -> None:
    """A workflow item of ``tenant`` changed in ``batch``."""
    batch.notes.add((tenant, workflow))


async def invalidate_changed(changed: set[tuple[str, str]]) -> None:
    """After a batch is in RocksDB: invalidate every tag it changed (debounced)."""
    for tenant, workflow in changed:
        debouncer.note(tenant, f"workflow:{workflow}")
