"""The Redis cache on its own, against real Redis: single flight across processes,
tenant scoping, tag invalidation, stale-while-revalidate, and life without Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from statekeeper.stores.cache import Cache, CacheConfig, CacheResult
from tests.integration.conftest import Infra
from tests.support.redis_server import RedisServer
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def shared_cache(infra: Infra, namespace: str) -> AsyncIterator[Cache]:
    cache = Cache(CacheConfig(redis_url=infra.redis_url, namespace=namespace))
    yield cache
    await cache.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


class Computation:
    """A computation that counts its runs and returns which run it was."""

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self) -> dict[str, int]:
        self.runs += 1
        return {"run": self.runs}


def asker(
    cache: Cache, compute: Callable[[], Awaitable[Any]], tenant: str = "acme", **kw: Any
) -> Callable[[], Awaitable[CacheResult]]:
    async def ask() -> CacheResult:
        tags = kw.get("tags", ["workflow:invoice"])
        ttl = kw.get("ttl_s", 60.0)
        return await cache.get_or_compute(
            "report.demo", tenant, {"workflow": "invoice"}, compute, ttl_s=ttl, tags=tags
        )

    return ask


def test_a_cold_key_is_computed_once_for_100_callers_in_two_processes(
    private_redis: RedisServer, namespace: str
) -> None:
    client = redis.Redis.from_url(private_redis.url)
    command = [sys.executable, "-m", "tests.support.cache_stampede", private_redis.url, namespace]
    processes = [
        subprocess.Popen([*command, "50"], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    wait_for(lambda: int(client.get(f"{namespace}:test:ready") or 0) == 2, timeout=30)
    client.incr(f"{namespace}:test:go")
    # The first process to SET the lock computes; release the computation only once the
    # other one has tried the lock too (a second SET): then it is surely waiting.
    wait_for(lambda: client.info("commandstats").get("cmdstat_set", {}).get("calls", 0) >= 2)
    client.incr(f"{namespace}:test:release")
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in processes]

    results = [result for output in outputs for result in output]
    assert int(client.get(f"{namespace}:test:computations") or 0) == 1
    assert len(results) == 100
    assert {json.dumps(value) for _, value in results} == {json.dumps({"computation": 1})}
    assert Counter(status for status, _ in results) == {"miss": 100}


async def test_one_tenant_never_receives_another_tenants_value(shared_cache: Cache) -> None:
    async def acme_secret() -> str:
        return "acme's numbers"

    async def globex_secret() -> str:
        return "globex's numbers"

    first = await asker(shared_cache, acme_secret, "acme")()
    other = await asker(shared_cache, globex_secret, "globex")()
    again = await asker(shared_cache, globex_secret, "globex")()
    await shared_cache.invalidate("globex", ["workflow:invoice"])
    acme_after = await asker(shared_cache, acme_secret, "acme")()

    assert (first.status, first.value) == ("miss", "acme's numbers")
    assert (other.status, other.value) == ("miss", "globex's numbers")
    assert (again.status, again.value) == ("hit", "globex's numbers")
    assert acme_after.status == "hit"  # another tenant's invalidation does not reach acme


async def test_invalidation_makes_later_reads_recompute(shared_cache: Cache) -> None:
    compute = Computation()
    ask = asker(shared_cache, compute)

    before = [await ask(), await ask()]
    await shared_cache.invalidate("acme", ["workflow:order"])
    unrelated = await ask()
    await shared_cache.invalidate("acme", ["workflow:invoice"])
    after = await ask()

    assert [(r.status, r.value) for r in before] == [("miss", {"run": 1}), ("hit", {"run": 1})]
    assert unrelated.status == "hit"
    assert (after.status, after.value) == ("miss", {"run": 2})


async def test_a_value_computed_across_an_invalidation_is_not_stored(shared_cache: Cache) -> None:
    runs = 0

    async def invalidated_while_running() -> int:
        nonlocal runs
        runs += 1
        if runs == 1:
            await shared_cache.invalidate("acme", ["workflow:invoice"])
        return runs

    first = await asker(shared_cache, invalidated_while_running)()
    second = await asker(shared_cache, invalidated_while_running)()

    assert (first.status, first.value) == ("miss", 1)
    assert (second.status, second.value) == ("miss", 2)  # the first value was not kept


async def test_delete_tagged_really_deletes(shared_cache: Cache, infra: Infra) -> None:
    compute = Computation()
    await asker(shared_cache, compute, tags=["conversation:u1"])()
    await asker(shared_cache, compute, "globex", tags=["conversation:u1"])()
    client = redis.Redis.from_url(infra.redis_url)
    namespace = shared_cache.config.namespace

    deleted = await shared_cache.delete_tagged("acme", ["conversation:u1"])

    assert deleted == 1
    assert client.keys(f"{namespace}:c:acme:*") == []
    assert len(client.keys(f"{namespace}:c:globex:*")) == 1
    assert (await asker(shared_cache, compute, tags=["conversation:u1"])()).status == "miss"


async def test_stale_value_is_served_while_one_refresh_runs(infra: Infra, namespace: str) -> None:
    cache = Cache(CacheConfig(redis_url=infra.redis_url, namespace=namespace, ttl_jitter=0))
    compute = Computation()
    ask = asker(cache, compute, ttl_s=0.2)
    try:
        first = await ask()
        stale = await wait_async(ask, lambda r: r.status != "hit")
        served_while_refreshing = await asyncio.gather(*(ask() for _ in range(20)))
        fresh = await wait_async(ask, lambda r: r.value == {"run": 2})
    finally:
        await cache.close()

    assert (first.status, first.value) == ("miss", {"run": 1})
    assert (stale.status, stale.value) == ("stale", {"run": 1})
    assert {r.value["run"] for r in served_while_refreshing} <= {1, 2}
    assert fresh.status in ("hit", "stale")
    assert compute.runs == 2  # one refresh, however many stale reads


async def test_without_redis_answers_bypass_and_caching_resumes(
    private_redis: RedisServer, namespace: str
) -> None:
    config = CacheConfig(redis_url=private_redis.url, namespace=namespace, breaker_retry_s=0.5)
    cache = Cache(config)
    compute = Computation()
    ask = asker(cache, compute)
    try:
        assert (await ask()).status == "miss"
        assert (await ask()).status == "hit"
        private_redis.stop()
        down = [await ask() for _ in range(5)]
        await cache.invalidate("acme", ["workflow:invoice"])  # kept for later, never raises
        private_redis.start()
        back = await wait_async(ask, lambda r: r.status == "hit")
    finally:
        await cache.close()

    assert [r.status for r in down] == ["bypass"] * 5
    assert [r.value["run"] for r in down] == [2, 3, 4, 5, 6]  # computed directly
    assert back.value["run"] >= 7  # the restarted Redis was empty: computed, then a hit


async def wait_async(
    ask: Callable[[], Awaitable[CacheResult]],
    done: Callable[[CacheResult], bool],
    timeout: float = 30.0,
) -> CacheResult:
    """Ask until ``done`` holds for the answer."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await ask()
        if done(result):
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"last answer {result}")
        await asyncio.sleep(0.05)
