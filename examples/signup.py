"""A five-step signup form in session memory: start, five updates, read back, end, notice.

    .venv/bin/python examples/signup.py            # against `make run` on this machine

The session lives in the worker owning its partition; when it ends (or idles out) a
`session.closed` notice with the final snapshot arrives on statekeeper.lifecycle.notices.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from statekeeper.client import AsyncQueryClient, Producer, lifecycle_notices, wait_until
from statekeeper.settings import get_settings

STEPS = [
    ("account", {"email": "ada@example.com"}),
    ("profile", {"name": "Ada Lovelace"}),
    ("address", {"city": "London"}),
    ("plan", {"plan": "pro"}),
    ("confirm", {"terms_accepted": True}),
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
    session = f"signup-{uuid.uuid4().hex[:6]}"
    producer = Producer(
        args.tenant, bootstrap_servers=args.bootstrap, topic_prefix=args.topic_prefix
    )
    # Listen before ending the session, so the notice cannot slip past ("latest" = from now on).
    notices = lifecycle_notices(
        bootstrap_servers=args.bootstrap,
        topic_prefix=args.topic_prefix,
        start="latest",
        type="session.closed",
        key=session,
    )
    async with producer, notices, AsyncQueryClient(args.url, args.api_key) as api:
        await producer.start_session(session, "user-ada", idle_timeout_s=900)
        print(f"started session {session} for user-ada (idle timeout 15 min)")
        for step, data in STEPS:
            await producer.update_session(session, step=step, data=data)
            print(f"  step {step}: {data}")

        live = await wait_until(lambda: api.session(session), lambda s: s["step"] == "confirm")
        print(f"read back: step {live['step']}, data {live['data']}")

        await producer.end_session(session, reason="submitted")
        print("ended the session; waiting for its closed notice")
        notice = await asyncio.wait_for(notices.__anext__(), timeout=60)
        final = notice["session"]
        print(f"closed: reason={notice['reason']}, final data {final['data']}")


if __name__ == "__main__":
    asyncio.run(main(arguments()))
