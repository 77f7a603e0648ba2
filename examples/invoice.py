"""An invoice workflow: define it, start an invoice, move it, fail, resume, read its history.

    .venv/bin/python examples/invoice.py            # against `make run` on this machine

Events go to Kafka through statekeeper.client.Producer (each send returns once the broker
has it); answers come from a worker over HTTP through AsyncQueryClient.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from statekeeper.client import AsyncQueryClient, Producer, wait_until
from statekeeper.settings import get_settings


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
    invoice = f"inv-{uuid.uuid4().hex[:6]}"
    producer = Producer(
        args.tenant, bootstrap_servers=args.bootstrap, topic_prefix=args.topic_prefix
    )
    async with producer, AsyncQueryClient(args.url, args.api_key) as api:
        await producer.define_workflow(
            "invoice",
            states=["draft", "sent", "paid", "void"],
            initial="draft",
            terminal=["paid", "void"],
            transitions=[("draft", "sent"), ("sent", "paid"), ("draft", "void"), ("sent", "void")],
        )
        print("defined workflow 'invoice': draft -> sent -> paid (or void)")

        sent = await producer.start_item(invoice, "invoice", attrs={"customer": "c-42"})
        print(f"started {invoice} (event id {sent.id}; reuse it to retry safely)")
        await producer.transition(invoice, "sent", actor="billing-bot", reason="emailed")
        await producer.fail(invoice, "payment gateway timed out", retryable=True)
        item = await wait_until(lambda: api.item(invoice), lambda i: i["version"] >= 3)
        print(f"now: {item['state']} / {item['condition']} ({item['error']['message']})")

        await producer.resume(invoice, reason="gateway is back")
        await producer.transition(invoice, "paid", reason="card charged")
        item = await wait_until(lambda: api.item(invoice), lambda i: i["version"] >= 5)
        print(f"now: {item['state']} / {item['condition']}, attempt {item['attempt']}")

        history = (await api.history(invoice))["history"]
        print(f"history of {invoice}: {len(history)} changes")
        for change in history:
            note = change.get("reason") or (change.get("error") or {}).get("message", "")
            print(
                f"  v{change['version']}: {change['from'] or '-'} -> {change['to']} "
                f"[{change['condition']}] {note}".rstrip()
            )


if __name__ == "__main__":
    asyncio.run(main(arguments()))
