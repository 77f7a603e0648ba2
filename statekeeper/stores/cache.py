"""Cache-aside on Redis for named computations: one computation per key, stale values served
while one refresh runs, tenant-scoped tag invalidation, and answers without Redis when it is down.

An entry is valid while every tag token it was built under is still current
(:mod:`statekeeper.stores.cache_entries`), so :meth:`Cache.invalidate` is one ``SET`` per tag
whatever the number of entries. Tokens are read *before* computing and the entry is written
by a script only if they are unchanged, so a computation that overlapped an invalidation
never stores a value built from old state.

Single flight: concurrent misses in one process share one task; across processes the first
to ``SET NX`` the lock computes and the others poll for the entry (one poller per process and
key, backing off from 10 to 100 ms). Redis errors open a circuit breaker: for
``breaker_retry_s`` every request is computed directly (``bypass``), then one probe tries
Redis again. Invalidations and deletions that could not reach Redis are kept in memory and
replayed when it answers again (not across a restart of this process).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from statekeeper.connections import redis_options
from statekeeper.metrics import metrics
from statekeeper.settings import Settings, get_settings
from statekeeper.stores.breaker import CircuitBreaker
from statekeeper.stores.cache_entries import (
    RELEASE_SCRIPT,
    TAG_MEMORY_MS,
    WRITE_SCRIPT,
    Entry,
    EntryKeys,
    KeySpace,
)

logger = logging.getLogger(__name__)

POLL_FIRST_S, POLL_MAX_S = 0.01, 0.1

HIT, MISS, STALE, BYPASS = "hit", "miss", "stale", "bypass"
RedisFailure = (RedisError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class CacheResult:
    """A value and where it came from: ``hit``, ``miss``, ``stale`` or ``bypass``."""

    value: Any
    status: str
    age_s: float


@dataclass(frozen=True)
class CacheConfig:
    """The knobs of one :class:`Cache` (from settings, or given by a test or benchmark)."""

    redis_url: str = field(repr=False)  # may hold a password
    namespace: str
    stale_s: float = 300.0
    ttl_jitter: float = 0.1
    lock_timeout_s: float = 30.0
    redis_timeout_s: float = 0.5
    breaker_retry_s: float = 3.0
    max_connections: int = 32
    redis_options: Mapping[str, Any] = field(default_factory=dict, repr=False)  # TLS, password

    @classmethod
    def from_settings(cls, settings: Settings) -> CacheConfig:
        return cls(
            redis_url=settings.effective_redis_url,
            namespace=f"sk:{settings.app_id}",
            stale_s=settings.cache_stale_s,
            ttl_jitter=settings.cache_ttl_jitter,
            lock_timeout_s=settings.cache_lock_timeout_s,
            redis_timeout_s=settings.cache_redis_timeout_s,
            breaker_retry_s=settings.cache_breaker_retry_s,
            max_connections=settings.cache_redis_max_connections,
            redis_options=redis_options(settings),
        )


class Cache:
    """Cache-aside over Redis with single flight, stale-while-revalidate and tag invalidation."""

    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.keys = KeySpace(config.namespace)
        self.stats = metrics.cache
        self.breaker = CircuitBreaker(config.breaker_retry_s, self.stats)
        self._client: aioredis.Redis | None = None
        self._write: Any = None
        self._release: Any = None
        self._flights: dict[str, asyncio.Task[CacheResult]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._pending_invalidations: set[tuple[str, str]] = set()
        self._pending_deletions: set[tuple[str, str]] = set()

    @property
    def _lock_ms(self) -> int:
        return int(self.config.lock_timeout_s * 1000)

    @property
    def redis(self) -> aioredis.Redis:
        """The one pooled client of this process (created on first use, in the running loop)."""
        if self._client is None:
            timeout = self.config.redis_timeout_s
            pool = aioredis.BlockingConnectionPool.from_url(
                self.config.redis_url,
                max_connections=self.config.max_connections,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),  # fail fast; the breaker decides when to retry
                **self.config.redis_options,
            )
            self._client = aioredis.Redis.from_pool(pool)
            self._write = self._client.register_script(WRITE_SCRIPT)
            self._release = self._client.register_script(RELEASE_SCRIPT)
        return self._client

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- the public API ------------------------------------------------------------------

    async def get_or_compute(
        self,
        name: str,
        tenant: str,
        params: Mapping[str, Any],
        compute: Callable[[], Awaitable[Any]],
        *,
        ttl_s: float,
        tags: Iterable[str] = (),
    ) -> CacheResult:
        """The cached value of ``name(params)`` for ``tenant``, computing it once if needed.

        Fresh entries are hits; entries past their TTL but within ``stale_s`` are served
        as ``stale`` while one background refresh runs; otherwise the caller waits for the
        one computation running anywhere (``miss``). Without Redis: ``bypass``.
        Exceptions of ``compute`` reach the caller and are not cached.
        """
        started = time.perf_counter()
        key = self.keys.for_entry(tenant, name, params, tags)
        try:
            result = await self._get_or_compute(key, name, compute, ttl_s)
        except _ComputeFailed as failed:
            raise failed.error from None
        self._count(name, result.status, time.perf_counter() - started)
        return result

    async def invalidate(self, tenant: str, tags: Iterable[str]) -> None:
        """Entries built under any of ``tags`` are recomputed by later reads. Never raises."""
        wanted = {(tenant, tag) for tag in tags}
        if not await self._redis_usable():
            self._pending_invalidations |= wanted
            return
        try:
            await self._replace_tokens(wanted)
            self.stats.invalidations += len(wanted)
        except RedisFailure as error:
            self.breaker.trip(error)
            self._pending_invalidations |= wanted

    async def delete_tagged(self, tenant: str, tags: Iterable[str]) -> int:
        """Delete every entry written under ``tags`` (for "forget"); returns how many.

        Tokens are replaced first, so a computation that was running cannot write its
        value back afterwards. Without Redis the deletion is kept and replayed when Redis
        answers again, and 0 is returned.
        """
        wanted = {(tenant, tag) for tag in tags}
        if not await self._redis_usable():
            self._pending_deletions |= wanted
            return 0
        try:
            return await self._delete(wanted)
        except RedisFailure as error:
            self.breaker.trip(error)
            self._pending_deletions |= wanted
            return 0

    # --- the read path -------------------------------------------------------------------

    async def _get_or_compute(
        self, key: EntryKeys, name: str, compute: Callable[[], Awaitable[Any]], ttl_s: float
    ) -> CacheResult:
        if not await self._redis_usable():
            return await self._single_flight(key.entry, lambda: self._bypass(name, compute))
        try:
            entry = await self._read(key)
        except RedisFailure as error:
            self.breaker.trip(error)
            return await self._single_flight(key.entry, lambda: self._bypass(name, compute))
        now = _now_ms()
        if entry is not None and now < entry.fresh_until_ms:
            return CacheResult(entry.value, HIT, entry.age_s(now))
        if entry is not None and now < entry.fresh_until_ms + self.config.stale_s * 1000:
            self._refresh_in_background(key, name, compute, ttl_s)
            return CacheResult(entry.value, STALE, entry.age_s(now))
        return await self._single_flight(key.entry, lambda: self._fill(key, name, compute, ttl_s))

    async def _read(self, key: EntryKeys) -> Entry | None:
        """The entry if present and every tag token it was built under is still current."""
        raw, *tokens = await self.redis.mget([key.entry, *key.tag_tokens])
        if raw is None:
            return None
        entry = Entry.decode(raw)
        if entry is None or entry.tokens != [_text(t) for t in tokens]:
            return None
        return entry

    async def _single_flight(
        self, flight: str, run: Callable[[], Awaitable[CacheResult]]
    ) -> CacheResult:
        """One ``run`` per key in this process; the others await the same task."""
        task = self._flights.get(flight)
        if task is None:
            task = asyncio.ensure_future(run())
            self._flights[flight] = task
            task.add_done_callback(lambda _: self._flights.pop(flight, None))
        return await asyncio.shield(task)  # a caller going away does not cancel the others

    async def _bypass(self, name: str, compute: Callable[[], Awaitable[Any]]) -> CacheResult:
        return CacheResult(await self._compute(name, compute), BYPASS, 0.0)

    async def _fill(
        self, key: EntryKeys, name: str, compute: Callable[[], Awaitable[Any]], ttl_s: float
    ) -> CacheResult:
        """Compute under the cross-process lock, or wait for whoever holds it."""
        poll = POLL_FIRST_S
        try:
            while True:  # the lock's lease bounds the wait if its holder dies
                token = secrets.token_hex(8)
                if await self.redis.set(key.lock, token, nx=True, px=self._lock_ms):
                    return await self._compute_locked(key, name, compute, ttl_s, token)
                entry = await self._read(key)
                if entry is not None and _now_ms() < entry.fresh_until_ms:
                    return CacheResult(entry.value, MISS, entry.age_s(_now_ms()))
                await asyncio.sleep(poll)
                poll = min(poll * 2, POLL_MAX_S)
        except RedisFailure as error:
            self.breaker.trip(error)
            return await self._bypass(name, compute)

    async def _compute_locked(
        self,
        key: EntryKeys,
        name: str,
        compute: Callable[[], Awaitable[Any]],
        ttl_s: float,
        token: str,
    ) -> CacheResult:
        """Holding the lock: check again, compute, store if no tag moved meanwhile."""
        try:
            entry = await self._read(key)  # another process may have filled it just now
            if entry is not None and _now_ms() < entry.fresh_until_ms:
                return CacheResult(entry.value, MISS, entry.age_s(_now_ms()))
            tokens = (
                [_text(t) for t in await self.redis.mget(key.tag_tokens)] if key.tag_tokens else []
            )
            value = await self._compute(name, compute)
            try:
                await self._store(key, value, tokens, ttl_s)
            except RedisFailure as error:
                self.breaker.trip(error)
                return CacheResult(value, BYPASS, 0.0)
            return CacheResult(value, MISS, 0.0)
        finally:
            await self._unlock(key.lock, token)

    async def _store(self, key: EntryKeys, value: Any, tokens: list[str], ttl_s: float) -> None:
        now = _now_ms()
        fresh_ms = int(ttl_s * 1000 * (1 - self.config.ttl_jitter * random.random()))
        payload = Entry(now, now + fresh_ms, tokens, value).encode()
        px = fresh_ms + int(self.config.stale_s * 1000) + 1
        keys = [key.entry, *key.tag_tokens, *key.tag_sets]
        stored = await self._write(keys=keys, args=[payload, px, len(tokens), *tokens])
        if not stored:
            logger.debug("not storing %s: a tag was invalidated while computing", key.entry)

    async def _unlock(self, lock: str, token: str) -> None:
        try:
            await self._release(keys=[lock], args=[token])
        except RedisFailure as error:  # the lease runs out on its own
            self.breaker.trip(error)

    def _refresh_in_background(
        self, key: EntryKeys, name: str, compute: Callable[[], Awaitable[Any]], ttl_s: float
    ) -> None:
        """One refresh per key: in this process by the flight map, across by the lock."""
        flight = key.entry + "#refresh"
        if flight in self._flights or key.entry in self._flights:
            return

        async def refresh() -> CacheResult:
            token = secrets.token_hex(8)
            try:
                if await self.redis.set(key.lock, token, nx=True, px=self._lock_ms):
                    return await self._compute_locked(key, name, compute, ttl_s, token)
            except RedisFailure as error:
                self.breaker.trip(error)
            return CacheResult(None, STALE, 0.0)  # someone else refreshes it

        task = asyncio.ensure_future(self._single_flight(flight, refresh))
        self._background.add(task)
        task.add_done_callback(_log_failure)
        task.add_done_callback(self._background.discard)

    async def _compute(self, name: str, compute: Callable[[], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        try:
            return await compute()
        except Exception as error:  # kept apart from Redis errors, never cached
            raise _ComputeFailed(error) from error
        finally:
            self.stats.computations[name] += 1
            self.stats.compute_seconds[name] += time.perf_counter() - started

    # --- availability --------------------------------------------------------------------

    async def _redis_usable(self) -> bool:
        """False while the breaker is open; after it, one probe replays what is pending."""
        state = self.breaker.state()
        if state != "probe":
            return state == "closed"
        self.breaker.probing = True
        try:
            await self.redis.ping()
            await self._replay_pending()
            self.breaker.close()
            return True
        except RedisFailure as error:
            self.breaker.trip(error)
            return False
        finally:
            self.breaker.probing = False

    async def _replay_pending(self) -> None:
        invalidations, deletions = self._pending_invalidations, self._pending_deletions
        if invalidations:
            await self._replace_tokens(invalidations)
            self.stats.invalidations += len(invalidations)
        if deletions:
            await self._delete(deletions)
        self._pending_invalidations -= invalidations
        self._pending_deletions -= deletions

    async def _replace_tokens(self, tags: Iterable[tuple[str, str]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for tenant, tag in tags:
                pipe.set(self.keys.tag_token(tenant, tag), secrets.token_hex(8), px=TAG_MEMORY_MS)
            await pipe.execute()

    async def _delete(self, tags: set[tuple[str, str]]) -> int:
        await self._replace_tokens(tags)
        deleted = 0
        for tenant, tag in tags:
            tag_set = self.keys.tag_set(tenant, tag)
            members = await self.redis.smembers(tag_set)
            if members:
                deleted += await self.redis.delete(*members)
            await self.redis.delete(tag_set)
        return deleted

    def _count(self, name: str, status: str, seconds: float) -> None:
        counter = {
            HIT: self.stats.hits,
            MISS: self.stats.misses,
            STALE: self.stats.stale,
            BYPASS: self.stats.bypasses,
        }[status]
        counter[name] += 1
        self.stats.latency_seconds[status] += seconds
        self.stats.latency_count[status] += 1


class _ComputeFailed(Exception):
    """Carries an exception of ``compute`` past the handlers meant for Redis errors."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


def _text(token: bytes | str | None) -> str:
    if isinstance(token, bytes):
        return token.decode()
    return token or ""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("background refresh failed: %r", task.exception())


cache = Cache(CacheConfig.from_settings(get_settings()))
"""The process-wide cache, built from settings (``STATEKEEPER_REDIS_URL``)."""
