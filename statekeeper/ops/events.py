"""``statekeeper define`` and ``statekeeper send``: events onto the contract topics."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from statekeeper.client import Event, Sent
from statekeeper.client.producer import EVENT_TYPES
from statekeeper.exceptions import ConfigError
from statekeeper.ops import common
from statekeeper.topics.definitions_file import read_definitions_file
from statekeeper.topics.envelope import validate_envelope
from statekeeper.topics.rejections import Rejected

BATCH = 500


def register(commands: Any) -> None:
    define = commands.add_parser("define", help="send the workflow definitions of a YAML/TOML file")
    define.add_argument("file", type=Path)
    common.add_kafka_args(define)
    common.add_json_arg(define)
    define.set_defaults(func=define_command)

    send = commands.add_parser("send", help="send one event, or a file of JSON lines")
    send.add_argument("type", nargs="?", help="e.g. workflow.start")
    send.add_argument("key", nargs="?", help="the entity: item, session, user or resource id")
    send.add_argument("--data", default="{}", help="the event's data, as JSON")
    send.add_argument("--id", help="event id (default: a new UUID); reuse it to retry")
    send.add_argument("--file", type=Path, help="JSON lines: {type, key, data?, id?, tenant?}")
    send.add_argument("--tenant", help="tenant (default: STATEKEEPER_CLI_TENANT, 'dev')")
    common.add_kafka_args(send)
    common.add_json_arg(send)
    send.set_defaults(func=send_command)


def define_command(args: argparse.Namespace) -> int:
    """Publish a definitions file, exactly as a worker does with STATEKEEPER_DEFINITIONS_FILE."""
    envelopes = read_definitions_file(args.file)
    out = common.output(args)

    async def run() -> list[Sent]:
        async with common.producer(args) as producer:
            return [await producer.send_envelope(e) for e in out.progress(envelopes, "define")]

    sent = asyncio.run(run())
    _report(out, sent)
    return 0


def send_command(args: argparse.Namespace) -> int:
    """Send events and wait until the broker acknowledged every one."""
    events = _events_from_file(args.file) if args.file else [_event_from_args(args)]
    out = common.output(args)
    tenant = args.tenant or common.settings().cli_tenant
    for number, event in enumerate(events, 1):
        _check(event, tenant, number)

    async def run() -> list[Sent]:
        sent: list[Sent] = []
        async with common.producer(args, tenant) as producer:
            batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
            for batch in out.progress(batches, "send"):
                sent += await producer.send_many(batch)
        return sent

    _report(out, asyncio.run(run()))
    return 0


def _event_from_args(args: argparse.Namespace) -> Event:
    if not args.type or not args.key:
        raise ConfigError("send TYPE KEY --data JSON, or send --file EVENTS.jsonl")
    return Event(args.type, args.key, _json_map(args.data, "--data"), id=args.id)


def _events_from_file(path: Path) -> list[Event]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    events = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        body = _json_map(line, f"{path}:{number}")
        events.append(
            Event(
                str(body.get("type")),
                str(body.get("key")),
                body.get("data") or {},
                id=body.get("id"),
                ts=body.get("ts"),
                tenant=body.get("tenant"),
            )
        )
    return events


def _json_map(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    return value


def _check(event: Event, tenant: str, number: int) -> None:
    """Refuse the whole run before sending anything if one event is invalid."""
    try:
        validate_envelope(event.envelope(tenant), types=EVENT_TYPES)
    except Rejected as rejection:
        raise ConfigError(f"event {number}: {rejection.reason}: {rejection.detail}") from None


def _report(out: common.Output, sent: list[Sent]) -> None:
    if out.as_json:
        out.json(
            [
                {"id": s.id, "type": s.type, "key": s.key, "topic": s.topic}
                | {"partition": s.partition, "offset": s.offset}
                for s in sent
            ]
        )
        return
    for s in sent:
        out.line(f"sent {s.type} {s.key} id={s.id} -> {s.topic}[{s.partition}]@{s.offset}")
