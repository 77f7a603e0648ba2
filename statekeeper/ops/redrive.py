"""``statekeeper redrive``: send dead-lettered events again, after the cause was fixed.

The dead-letter topic is read from its start to its current end. Chosen records (by reason,
entity key, tenant, or dead-letter partition and offset range) whose ``event`` is a decoded
envelope are sent, unchanged — same id, same ``ts`` — to the topic they were first sent to,
under their contract key ``{tenant}/{key}``, in dead-letter order (which keeps each entity's
order: dead letters are keyed like their input). An event that appears several times (it was
redriven and dead-lettered again) is sent once. Records that cannot be sent again are listed
with the reason: raw bytes that never decoded, a topic outside this prefix's inputs, a type
that does not belong on its topic, an envelope that is still invalid.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from statekeeper.client import Received, Sent, StreamReader
from statekeeper.ops import common
from statekeeper.ops.output import Output
from statekeeper.topics.envelope import validate_envelope
from statekeeper.topics.names import TopicNames
from statekeeper.topics.rejections import Rejected

BATCH = 500


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters to redrive; None or empty means any."""

    reasons: frozenset[str] = frozenset()
    key: str | None = None
    tenant: str | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def wants(self, record: Received) -> bool:
        value, event = record.value, _event(record)
        if self.reasons and value.get("reason") not in self.reasons:
            return False
        if self.key is not None and event.get("key") != self.key:
            return False
        if self.tenant is not None and event.get("tenant") != self.tenant:
            return False
        if self.partition is not None and record.partition != self.partition:
            return False
        if self.from_offset is not None and record.offset < self.from_offset:
            return False
        return self.to_offset is None or record.offset <= self.to_offset


@dataclass(frozen=True, slots=True)
class Candidate:
    """One chosen dead letter: what would be sent where, or why it cannot be."""

    partition: int
    offset: int
    reason: str
    topic: str
    envelope: dict[str, Any]
    skip: str | None = None

    def public(self) -> dict[str, Any]:
        e = self.envelope
        return {
            "deadletter": {"partition": self.partition, "offset": self.offset},
            "reason": self.reason,
            "topic": self.topic,
            "type": e.get("type"),
            "tenant": e.get("tenant"),
            "key": e.get("key"),
            "id": e.get("id"),
            "skip": self.skip,
        }


def choose(records: Iterable[Received], names: TopicNames, selection: Selection) -> list[Candidate]:
    """The chosen dead letters in order, each marked with why it would be skipped (if so)."""
    chosen: list[Candidate] = []
    seen: dict[tuple[Any, ...], str] = {}
    for record in records:
        if not selection.wants(record):
            continue
        value = record.value
        envelope = _event(record)
        topic = str(value.get("topic"))
        candidate = Candidate(
            record.partition, record.offset, str(value.get("reason")), topic, envelope
        )
        skip = _unsendable(value, envelope, topic, names)
        identity = (topic, envelope.get("tenant"), envelope.get("key"), envelope.get("id"))
        if skip is None and identity in seen:
            skip = f"same event as {seen[identity]}"
        elif skip is None:
            seen[identity] = f"{record.partition}:{record.offset}"
        chosen.append(Candidate(**{**_fields(candidate), "skip": skip}))
    return chosen


def _unsendable(
    value: dict[str, Any], envelope: dict[str, Any], topic: str, names: TopicNames
) -> str | None:
    if not isinstance(value.get("event"), dict):
        return "the record never decoded; fix the producer and send it again"
    if topic not in names.inputs():
        return f"{topic} is not an input topic under prefix {names.prefix!r}"
    event_type = str(envelope.get("type"))
    if names.topic_for_type(event_type) != topic:
        return f"type {event_type!r} does not belong on {topic}"
    try:
        validate_envelope(envelope, types=frozenset({event_type}))
    except Rejected as rejection:
        return f"still invalid: {rejection.detail}"
    return None


def _event(record: Received) -> dict[str, Any]:
    event = record.value.get("event")
    return event if isinstance(event, dict) else {}


def _fields(candidate: Candidate) -> dict[str, Any]:
    return {name: getattr(candidate, name) for name in Candidate.__slots__}


def register(commands: Any) -> None:
    redrive = commands.add_parser(
        "redrive", help="send dead-lettered events again to their original topic"
    )
    redrive.add_argument("--reason", action="append", default=[], help="repeatable")
    redrive.add_argument("--key", help="only this entity id")
    redrive.add_argument("--tenant", help="only this tenant")
    redrive.add_argument("--partition", type=int, help="only this dead-letter partition")
    redrive.add_argument("--from-offset", type=int, help="first dead-letter offset (inclusive)")
    redrive.add_argument("--to-offset", type=int, help="last dead-letter offset (inclusive)")
    redrive.add_argument("--dry-run", action="store_true", help="list what would be sent")
    common.add_kafka_args(redrive)
    common.add_json_arg(redrive)
    redrive.set_defaults(func=redrive_command)


def redrive_command(args: argparse.Namespace) -> int:
    """List (``--dry-run``) or send the chosen dead letters."""
    selection = Selection(
        frozenset(args.reason),
        args.key,
        args.tenant,
        args.partition,
        args.from_offset,
        args.to_offset,
    )
    out = common.output(args)
    names = common.topics(args)
    candidates = asyncio.run(_read(args, names, selection))
    sendable = [c for c in candidates if c.skip is None]
    sent: list[Sent] = [] if args.dry_run else asyncio.run(_send(args, out, sendable))
    _report(out, candidates, sent, args.dry_run)
    return 0


async def _read(
    args: argparse.Namespace, names: TopicNames, selection: Selection
) -> list[Candidate]:
    reader = StreamReader(names.deadletter, start="earliest", **common.kafka_options(args))
    async with reader:
        records = await reader.read_until_end(timeout_s=120)
    return choose(records, names, selection)


async def _send(args: argparse.Namespace, out: Output, sendable: list[Candidate]) -> list[Sent]:
    sent: list[Sent] = []
    async with common.producer(args) as producer:
        batches = [sendable[i : i + BATCH] for i in range(0, len(sendable), BATCH)]
        for batch in out.progress(batches, "redrive"):
            sent += await producer.send_envelopes([(c.envelope, c.topic) for c in batch])
    return sent


def _report(out: Output, candidates: list[Candidate], sent: list[Sent], dry_run: bool) -> None:
    skipped = sum(1 for c in candidates if c.skip is not None)
    if out.as_json:
        out.json(
            {
                "dry_run": dry_run,
                "selected": [c.public() for c in candidates],
                "sent": len(sent),
                "skipped": skipped,
            }
        )
        return
    verb = "would send" if dry_run else "sent"
    rows = [
        (
            f"{c.partition}:{c.offset}",
            c.reason,
            c.envelope.get("type"),
            f"{c.envelope.get('tenant')}/{c.envelope.get('key')}",
            c.envelope.get("id"),
            verb if c.skip is None else f"skip: {c.skip}",
        )
        for c in candidates
    ]
    out.table("dead letters chosen", ["at", "reason", "type", "entity", "id", "action"], rows)
    count = len(candidates) - skipped if dry_run else len(sent)
    out.line(f"{verb} {count} event(s), skipped {skipped}")
