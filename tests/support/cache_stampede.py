"""One OS process of the cross-process single-flight test: N concurrent misses on one key.

Run as ``python -m tests.support.cache_stampede URL NAMESPACE N``. It registers itself as
ready, waits for the test to say go (so both processes really overlap), then prints the
statuses and values it got as JSON. The computation counts itself in Redis.
"""

from __future__ import annotations

import asyncio
import json
import sys

import redis.asyncio as aioredis

from statekeeper.stores.cache import Cache, CacheConfig


async def main(url: str, namespace: str, n: int) -> None:
    counter = aioredis.Redis.from_url(url)
    # A generous timeout: this test is about single flight, not about a slow Redis
    # (on a loaded machine a 0.5 s timeout can open the breaker and bypass the cache).
    cache = Cache(CacheConfig(redis_url=url, namespace=namespace, redis_timeout_s=5))

    async def compute() -> dict[str, int]:
        computed = await counter.incr(f"{namespace}:test:computations")
        while not await counter.exists(f"{namespace}:test:release"):
            await asyncio.sleep(0.01)  # runs until the test has seen the other process wait
        return {"computation": computed}

    await counter.incr(f"{namespace}:test:ready")
    while not await counter.exists(f"{namespace}:test:go"):
        await asyncio.sleep(0.01)
    calls = [
        cache.get_or_compute("stampede", "acme", {"p": 1}, compute, ttl_s=60) for _ in range(n)
    ]
    results = await asyncio.gather(*calls)
    print(json.dumps([[r.status, r.value] for r in results]))
    await cache.close()
    await counter.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
