"""Point queries from a process of their own, as a user's client would send them.

``python -m bench.query_probe URL --items N`` asks ``GET URL/v1/workflows/item-<random>``
one request at a time (2 ms apart) until its standard input closes, then prints the
latencies in milliseconds as one JSON list. ``bench.workflow`` runs it beside its load
generator, so the generator's event loop never delays a query (nor a query the generator).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time

import aiohttp

from bench.common import API_KEY


async def probe(url: str, items: int, stop: asyncio.Event) -> list[float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        while not stop.is_set():
            key = f"item-{random.randrange(items)}"
            began = time.perf_counter()
            async with http.get(f"{url}/v1/workflows/{key}") as reply:
                await reply.read()
            latencies.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(0.002)
    return latencies


async def main(url: str, items: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    latencies = await probe(url, items, stop)
    print(json.dumps([round(ms, 3) for ms in latencies]), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--items", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.items))
