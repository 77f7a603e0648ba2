"""Conversation memory at 10,000 messages for one user: append rate, context and search p99.

Run: ``.venv/bin/python -m bench.conversation``. Writes ``bench/results/conversation.json``.
One worker, real broker and Redis. Measured, in one run:

- append rate: 10,000 ``conversation.message`` events for one user (produced as one backlog),
  from the first send until the last message is readable over HTTP;
- the first search after a restart (the BM25 index rebuilt from the messages table);
- search p99 over HTTP (one random two-word query per request, sequential requests);
- context assembly p99 over HTTP, with a query and without (sequential requests; summaries
  are cached after their first computation, and the first computation is reported apart).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
from aiokafka import AIOKafkaProducer

from bench.common import API_KEY, Deployment, bring_up, git_revision, rss_mb, save

VOCABULARY = (  # noqa: SIM905 (a word list reads better as text)
    "invoice refund parcel delivery Berlin Munich weather hiking dog cat recipe salmon "
    "chicken train flight hotel booking password account payment card statement garden "
    "tomato bicycle repair laptop screen battery meeting project deadline budget report"
).split()
CONVERSATIONS = 20


def message_event(i: int, now: int) -> dict[str, Any]:
    words = random.choices(VOCABULARY, k=random.randint(6, 30))
    text = ". ".join(" ".join(words[j : j + 8]) for j in range(0, len(words), 8)) + "."
    return {
        "v": 1,
        "id": uuid.uuid4().hex,
        "type": "conversation.message",
        "tenant": "acme",
        "key": "heavy-user",
        "ts": now - (10_000 - i) * 1000,
        "data": {
            "conversation": f"c{i % CONVERSATIONS}",
            "role": "user" if i % 2 else "assistant",
            "content": f"turn {i}: {text}",
        },
    }


async def produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        pending = [
            await producer.send(
                topic, key=f"acme/{e['key']}".encode(), value=msgpack.packb(e, use_bin_type=True)
            )
            for e in events
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any, float]:
    started = time.perf_counter()
    async with session.get(url, headers={"Authorization": f"Bearer {API_KEY}"}) as reply:
        body = await reply.json()
        return reply.status, body, time.perf_counter() - started


async def wait_for_last(session: aiohttp.ClientSession, base: str, last: str) -> None:
    while True:
        status, body, _ = await get_json(session, f"{base}/messages?limit=1")
        if status == 200 and body["messages"] and body["messages"][-1]["content"] == last:
            return
        await asyncio.sleep(0.05)


def summary_ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def run(messages: int, requests: int, root: Path) -> dict[str, Any]:
    bootstrap, redis_url = bring_up()
    deployment = Deployment(bootstrap, redis_url, root)
    try:
        worker = deployment.start()
        now = int(time.time() * 1000)
        events = [message_event(i, now) for i in range(messages)]
        base = f"{worker.url}/v1/conversations/heavy-user"
        async with aiohttp.ClientSession() as session:
            started = time.perf_counter()
            await produce(bootstrap, deployment.topic("conversation.events"), events)
            await wait_for_last(session, base, events[-1]["data"]["content"])
            append_s = time.perf_counter() - started
            rss_after_append = rss_mb(worker.process.pid) if worker.process else 0.0

            worker.stop()
            worker = deployment.start()
            base = f"{worker.url}/v1/conversations/heavy-user"
            _, _, first_search = await get_json(session, f"{base}/search?q=invoice+Berlin")

            search = []
            for _ in range(requests):
                q = "+".join(random.sample(VOCABULARY, 2))
                status, _, took = await get_json(session, f"{base}/search?q={q}&limit=10")
                assert status == 200
                search.append(took)

            first_context: list[float] = []
            context_latest, context_query = [], []
            budgets = (500, 2000, 8000)
            for budget in budgets:  # summaries computed once per (conversation, budget)
                for c in range(CONVERSATIONS):
                    url = f"{base}/context?budget_tokens={budget}&conversation=c{c}"
                    status, body, took = await get_json(session, url)
                    assert status == 200 and body["used_tokens"] <= budget
                    first_context.append(took)
            for _ in range(requests):
                budget, c = random.choice(budgets), random.randrange(CONVERSATIONS)
                url = f"{base}/context?budget_tokens={budget}&conversation=c{c}"
                status, body, took = await get_json(session, url)
                assert status == 200 and body["used_tokens"] <= budget
                context_latest.append(took)
                q = "+".join(random.sample(VOCABULARY, 2))
                status, body, took = await get_json(session, f"{url}&query={q}")
                assert status == 200 and body["used_tokens"] <= budget
                context_query.append(took)
    finally:
        deployment.close()
    return {
        "revision": git_revision(),
        "messages": messages,
        "conversations": CONVERSATIONS,
        "append": {
            "seconds": round(append_s, 2),
            "messages_per_s": round(messages / append_s, 1),
            "worker_rss_mb": round(rss_after_append, 1),
        },
        "first_search_after_restart_ms": round(first_search * 1000, 1),
        "search": summary_ms(search),
        "context_first_per_conversation_and_budget": summary_ms(first_context),
        "context_latest_turn": summary_ms(context_latest),
        "context_with_query": summary_ms(context_query),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    random.seed(7)
    with tempfile.TemporaryDirectory(prefix="sk-bench-conv-") as tmp:
        result = asyncio.run(run(args.messages, args.requests, Path(tmp)))
    path = save("conversation", result)
    print(path.read_text())


if __name__ == "__main__":
    main()
