"""A chat assistant that remembers a returning user across conversations.

    .venv/bin/python examples/chat.py              # against `make run` on this machine

Conversation A happens one day; conversation B later. Asking for B's context with a token
budget brings back what in A is relevant to B's question, next to B's recent turns.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from statekeeper.client import AsyncQueryClient, Producer, wait_until
from statekeeper.settings import get_settings

CONVERSATION_A = [
    ("user", "Hi! I am planning a trip to Lisbon in May."),
    ("assistant", "Lovely. How can I help with the plans?"),
    ("user", "I am vegetarian, so I will need vegetarian restaurants on the trip."),
    ("assistant", "Noted: vegetarian food for your Lisbon trip."),
    ("user", "Also, what is the weather like there in spring?"),
    ("assistant", "Mild and sunny, usually around twenty degrees."),
]
CONVERSATION_B = [
    ("user", "Back again. My laptop battery drains fast, any tips?"),
    ("assistant", "Lower the screen brightness and close background apps."),
    ("user", "Thanks. Which restaurants would suit me on my trip?"),
]


def arguments() -> argparse.Namespace:
    settings = get_settings()
    key = settings.cli_api_key.get_secret_value() if settings.cli_api_key else None
    dev_key = settings.var_dir / "dev-api-key"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=settings.bootstrap_servers)
    parser.add_argument("--url", default=settings.cli_url or settings.canonical_url)
    parser.add_argument(
        "--api-key", default=key or (dev_key.read_text().strip() if dev_key.exists() else None)
    )
    parser.add_argument("--tenant", default=settings.cli_tenant)
    parser.add_argument("--topic-prefix", default=settings.topic_prefix)
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    user = f"traveller-{uuid.uuid4().hex[:6]}"
    producer = Producer(
        args.tenant, bootstrap_servers=args.bootstrap, topic_prefix=args.topic_prefix
    )
    async with producer, AsyncQueryClient(args.url, args.api_key) as api:
        for conversation, turns in (("conv-a", CONVERSATION_A), ("conv-b", CONVERSATION_B)):
            print(f"{conversation}:")
            for role, content in turns:
                await producer.add_message(user, conversation, role, content)
                print(f"  {role}: {content}")
        total = len(CONVERSATION_A) + len(CONVERSATION_B)
        await wait_until(lambda: api.messages(user), lambda page: len(page["messages"]) == total)

        context = await api.context(user, 80, conversation="conv-b")
        print(f"context for conv-b, budget 80 tokens, {context['used_tokens']} used:")
        for turn in context["recent"]:
            print(f"  recent   [{turn['conversation']}] {turn['role']}: {turn['content']}")
        for turn in context["relevant"]:
            print(f"  relevant [{turn['conversation']}] {turn['role']}: {turn['content']}")
        if context["summary"]:
            print(f"  summary  {context['summary']['text']}")


if __name__ == "__main__":
    asyncio.run(main(arguments()))
