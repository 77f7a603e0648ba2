"""``statekeeper get|history|counts`` over HTTP, and ``statekeeper tail`` of the output topics."""

from __future__ import annotations

import argparse
import asyncio
import datetime
from typing import Any

from statekeeper.client import StreamReader
from statekeeper.client.consumer import Received
from statekeeper.ops import common
from statekeeper.ops.output import Output


def register(commands: Any) -> None:
    for name, help_text in (
        ("get", "a workflow item now"),
        ("history", "every applied change of a workflow item"),
    ):
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("item")
        common.add_http_args(parser)
        common.add_json_arg(parser)
        parser.set_defaults(func=get_command, query=name)
    counts = commands.add_parser("counts", help="items per state and condition, per workflow")
    counts.add_argument("--workflow")
    common.add_http_args(counts)
    common.add_json_arg(counts)
    counts.set_defaults(func=counts_command)

    tail = commands.add_parser("tail", help="follow the status, notices or dead-letter topic")
    tail.add_argument("stream", choices=["status", "notices", "deadletter"])
    tail.add_argument("--tenant")
    tail.add_argument("--key", help="entity id")
    tail.add_argument("--workflow", help="status: only this workflow")
    tail.add_argument("--state", help="status: only changes into this state")
    tail.add_argument("--type", help="notices: only this notice type, e.g. session.closed")
    tail.add_argument("--reason", help="deadletter: only this reason")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    tail.add_argument("--limit", type=int, help="stop after this many records")
    tail.add_argument("--until-end", action="store_true", help="stop at the topic's current end")
    tail.add_argument("--group", help="consumer group: resume where it stopped, commit as read")
    common.add_kafka_args(tail)
    common.add_json_arg(tail)
    tail.set_defaults(func=tail_command)


def get_command(args: argparse.Namespace) -> int:
    """Show one item, or its history."""
    api = common.query_client(args)
    out = common.output(args)
    if args.query == "get":
        item = api.item(args.item)
        out.json(item) if out.as_json else out.fields(item)
        return 0
    history = api.history(args.item)
    if out.as_json:
        out.json(history)
        return 0
    rows = [
        (
            h["version"],
            _when(h["ts"]),
            h.get("from") or "-",
            h["to"],
            h["condition"],
            h.get("reason") or h.get("error") or "",
        )
        for h in history["history"]
    ]
    out.table(f"{args.item}", ["v", "at", "from", "to", "condition", "reason/error"], rows)
    return 0


def counts_command(args: argparse.Namespace) -> int:
    """Show work in progress per workflow."""
    counts = common.query_client(args).counts(args.workflow)
    out = common.output(args)
    if out.as_json:
        out.json(counts)
        return 0
    for workflow, by in counts.items():
        rows = [(state, n) for state, n in by["states"].items()]
        rows += [(f"({condition})", n) for condition, n in by["conditions"].items()]
        out.table(workflow, ["state / (condition)", "items"], rows)
    return 0


def tail_command(args: argparse.Namespace) -> int:
    """Print the records of an output topic as they come (Ctrl-C to stop)."""
    out = common.output(args)
    try:
        return asyncio.run(_tail(args, out))
    except KeyboardInterrupt:
        return 0


async def _tail(args: argparse.Namespace, out: Output) -> int:
    reader = _reader(args)
    shown = 0
    async with reader:
        if args.until_end:
            records = await reader.read_until_end()
            for record in records[: args.limit]:
                _show(out, args.stream, record)
            return 0
        async for record in reader:
            _show(out, args.stream, record)
            shown += 1
            if args.limit is not None and shown >= args.limit:
                break
    return 0


def _reader(args: argparse.Namespace) -> StreamReader:
    names = common.topics(args)
    topic, where = {
        "status": (
            names.workflow_status,
            {
                "tenant": args.tenant,
                "key": args.key,
                "workflow": args.workflow,
                "state": args.state,
            },
        ),
        "notices": (
            names.lifecycle_notices,
            {"tenant": args.tenant, "key": args.key, "type": args.type},
        ),
        "deadletter": (names.deadletter, {"reason": args.reason}),
    }[args.stream]
    if args.until_end and args.group:
        args.group = None  # a snapshot read: no group to move
    return StreamReader(
        topic,
        group_id=args.group,
        start="earliest" if args.from_beginning or args.until_end else "latest",
        where=where,
        **common.kafka_options(args),
    )


def _show(out: Output, stream: str, record: Received) -> None:
    if out.as_json:
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        out.json({**where, "value": record.value})
        return
    out.line(describe(stream, record))


def describe(stream: str, record: Received) -> str:
    """One readable line per record."""
    v = record.value
    if stream == "status":
        extra = " ".join(f"{k}={v[k]}" for k in ("reason", "actor", "error") if v.get(k))
        return (
            f"{_when(v.get('ts'))} {v.get('tenant')}/{v.get('key')} {v.get('workflow')}: "
            f"{v.get('from') or '∅'} -> {v.get('to')} [{v.get('condition')}] "
            f"v{v.get('version')} {extra}"
        ).rstrip()
    if stream == "notices":
        reason = f" reason={v['reason']}" if v.get("reason") else ""
        return f"{_when(v.get('ts'))} {v.get('type')} {v.get('tenant')}/{v.get('key')}{reason}"
    event = v.get("event") if isinstance(v.get("event"), dict) else {}
    what = (
        f"{event.get('type')} {event.get('tenant')}/{event.get('key')} id={event.get('id')}"
        if event
        else "(undecoded record)"
    )
    return (
        f"{record.partition}:{record.offset} {_when(v.get('ts'))} {v.get('reason')} "
        f"from {v.get('topic')}[{v.get('partition')}]@{v.get('offset')}: {what} — {v.get('detail')}"
    )


def _when(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
