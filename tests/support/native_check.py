"""The compiled workflow core against the Python path, event by event, on random input.

Run by ``tests/unit/test_native.py`` in a process of its own (the agents need an app and a
data dir of their own)::

    python -m tests.support.native_check --events 4000 --seed 1 [--damaged 0.02]

Each random event is handled twice from the same table state: once by the Python path
(``EventPipeline.handle_record``) and once as the batched runner does it with the compiled
core (:func:`statekeeper.agents.workflow.apply_compiled`, here a record at a time), falling
back to the Python path when it hands the record back. Both must stage the same rows,
counts, records, notes and metrics. The events mix what the core takes (starts, legal
transitions, with attributes, reasons, SLAs and terminal states) with what it must hand
back (rejections of every kind, redeliveries, replays, stale replays, other event types, odd
encodings, misrouted records).
Prints one JSON line of counts; exits 1 at the first difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import struct
import sys
import tempfile
from typing import Any

os.environ.setdefault("STATEKEEPER_VAR_DIR", tempfile.mkdtemp(prefix="sk-native-"))
os.environ.setdefault("STATEKEEPER_LOG_LEVEL", "error")
os.environ["STATEKEEPER_NATIVE"] = "true"

import msgpack  # noqa: E402
from aiokafka import ConsumerRecord  # noqa: E402

from statekeeper.agents import workflow  # noqa: E402
from statekeeper.agents.batched import InputRecord  # noqa: E402
from statekeeper.agents.definitions import registry  # noqa: E402
from statekeeper.agents.pipeline import python_partition  # noqa: E402
from statekeeper.metrics import metrics  # noqa: E402
from statekeeper.stores import tables  # noqa: E402
from statekeeper.stores.definitions import parse_definition  # noqa: E402
from statekeeper.stores.staged import Staging, staging  # noqa: E402
from statekeeper.stores.workflow import Item, counts_key  # noqa: E402

PARTITIONS = 8
TABLES = (
    tables.workflow_items,
    tables.workflow_history,
    tables.workflow_counts,
    tables.workflow_deadlines,
    tables.workflow_retention,
)
DEFINITIONS = {
    ("acme", "flow"): {
        "states": ["draft", "review", "sent", "paid", "void"],
        "initial": "draft",
        "terminal": ["paid", "void"],
        "transitions": [
            ["draft", "review"], ["review", "draft"], ["review", "sent"], ["sent", "paid"],
            ["draft", "void"], ["sent", "sent"],
        ],
        "sla_seconds": {"review": 60, "sent": 3600},
    },
    ("acme", "instant"): {  # starts finished
        "states": ["done"], "initial": "done", "terminal": ["done"], "transitions": [],
    },
    ("beta-2", "flow"): {
        "states": ["a", "b", "ünïcode"],
        "initial": "a",
        "terminal": [],
        "transitions": [["a", "b"], ["b", "ünïcode"], ["ünïcode", "a"]],
    },
}  # fmt: skip
TENANTS = ["acme", "beta-2", "Bad", "nobody"]
WORKFLOWS = ["flow", "instant", "missing", ""]
STATES = ["draft", "review", "sent", "paid", "void", "a", "b", "ünïcode", "nowhere", ""]
TYPES = [
    "workflow.start", "workflow.transition", "workflow.transition", "workflow.transition",
    "workflow.fail", "workflow.resume", "workflow.cancel", "workflow.annotate", "workflow.define",
]  # fmt: skip
NOW = 1_780_000_000_000


class Case:
    """Random events over a few items, with their ids and offsets kept for redelivery."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.keys = [f"item-{n}" for n in range(300)] + ["ключ", "tab\tkey", "x" * 257]
        self.sent: list[tuple[bytes | None, bytes | None, int]] = []
        self.offsets = dict.fromkeys(range(PARTITIONS), 0)

    def scalar(self) -> Any:
        rng = self.rng
        return rng.choice(
            [
                None, True, False, 0, 1, -1, 127, 128, 255, 256, -32, -33, -128, -129, 65535,
                65536, -32768, -32769, 2**31, -(2**31) - 1, 2**32, 2**63 - 1, 2**64 - 1,
                -(2**63), 0.5, -1e300, float("inf"), "", "é", "x" * 31, "y" * 32, "z" * 255,
                "w" * 256, "v" * 1024, "u" * 1025, "ü" * 1024, b"raw", [1], {"a": 1},
            ]
        )  # fmt: skip

    def attrs(self) -> Any:
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            return rng.choice([None, [], "x", 3])
        if roll < 0.08:
            return {f"k{n}": n for n in range(rng.choice([64, 65]))}
        names = ["amount", "customer", "é", "", "n" * 64, "n" * 65, "ünï" * 30]
        return {rng.choice(names): self.scalar() for _ in range(rng.randint(0, 5))}

    def note(self) -> Any:
        return self.rng.choice([None, "", "by hand", "ü" * 2049, "r" * 2048, 5, ["x"]])

    def data(self, kind: str) -> dict[str, Any]:
        rng = self.rng
        data = self.fields(kind)
        for name in ("reason", "actor"):
            if rng.random() < 0.25:
                data[name] = self.note()
        if rng.random() < 0.1:
            deep: Any = 1
            for _ in range(rng.choice([1, 5, 29, 30, 31])):
                deep = [deep] if rng.random() < 0.5 else {"d": deep}
            data["extra"] = deep
        return data

    def fields(self, kind: str) -> dict[str, Any]:
        """The type's own fields, often wrong."""
        rng = self.rng
        data: dict[str, Any] = {}
        if kind == "workflow.start":
            if rng.random() < 0.95:
                data["workflow"] = rng.choice([*WORKFLOWS, "flow", "flow", 7])
            if rng.random() < 0.6:
                data["attrs"] = self.attrs()
        elif kind == "workflow.transition":
            if rng.random() < 0.97:
                data["to"] = rng.choice([*STATES, "review", "sent", "b", None, 3])
            if rng.random() < 0.2:
                data["expected_version"] = rng.choice([None, 1, 2, 3, True, "2", 1.0])
        elif kind == "workflow.fail":
            data["error"] = rng.choice(["boom", "", None])
            if rng.random() < 0.3:
                data["retryable"] = rng.choice([True, False, "no"])
        elif kind == "workflow.annotate":
            data["attrs"] = self.attrs()
        return data

    def envelope(self) -> dict[str, Any]:
        rng = self.rng
        kind = rng.choice(TYPES)
        value: dict[str, Any] = {
            "v": 1,
            "id": f"e{rng.randrange(10**9)}",
            "type": kind,
            "tenant": rng.choice(TENANTS[:2] * 8 + TENANTS),
            "key": rng.choice(self.keys),
            "ts": rng.choice([NOW - 5, NOW, 0]),
            "data": self.data(kind),
        }
        roll = rng.random()
        if roll < 0.03:
            del value["data"]
        elif roll < 0.05:
            value["extra"] = 1
        elif roll < 0.08:
            field = rng.choice(["v", "id", "type", "tenant", "key", "ts", "data"])
            value[field] = rng.choice([None, 2, -1, "", True, [1], {"a": 1}, "i" * 129])
        return value

    def legal(self, state: Tables) -> dict[str, Any]:
        """A start of a new item or a legal move of a stored one, as most input is."""
        rng = self.rng
        tenant = rng.choice(["acme", "acme", "beta-2"])
        key = rng.choice(self.keys[:300])
        record_key = f"{tenant}/{key}".encode()
        stored = state.dbs[(tables.workflow_items, python_partition(record_key, PARTITIONS))]
        row = stored.get(record_key)
        item = Item.from_bytes(row) if row is not None else None
        if item is None:
            name = "flow" if tenant == "beta-2" else rng.choice(["flow", "flow", "instant"])
            data = {"workflow": name}
            if rng.random() < 0.5:
                data["attrs"] = self.attrs()
            kind = "workflow.start"
        else:
            spec = DEFINITIONS[(tenant, item.workflow)]
            targets = [b for a, b in spec["transitions"] if a == item.state] or ["nowhere"]
            data = {"to": rng.choice(targets)}
            if rng.random() < 0.2:
                data["expected_version"] = item.version
            kind = "workflow.transition"
        for name in ("reason", "actor"):
            if rng.random() < 0.2:
                data[name] = self.note()
        ts = rng.choice([NOW, 2**40, 0])
        return {"v": 1, "id": f"ok{rng.randrange(10**9)}", "type": kind, "tenant": tenant,
                "key": key, "ts": ts, "data": data}  # fmt: skip

    def record(self, state: Tables) -> tuple[bytes | None, bytes | None, int]:
        """(key, value, partition) of a new record, or one sent before (redelivered)."""
        rng = self.rng
        if self.sent and rng.random() < 0.08:
            return rng.choice(self.sent)
        envelope = self.legal(state) if rng.random() < 0.6 else self.envelope()
        value = encode(envelope, rng)
        key: bytes | None = f"{envelope['tenant']}/{envelope['key']}".encode()
        if isinstance(envelope.get("tenant"), str) and isinstance(envelope.get("key"), str):
            pass
        else:
            key = rng.choice([None, b"acme/item-1"])
        partition = python_partition(key, PARTITIONS) if key is not None else 0
        roll = rng.random()
        if roll < 0.02:
            key = b"acme/item-0"  # under someone else's key
        elif roll < 0.04:
            partition = (partition + 1) % PARTITIONS  # on another partition
        elif roll < 0.05:
            value = value[:-1] if rng.random() < 0.5 else value + b"\xc0"
        elif roll < 0.06:
            value = None  # type: ignore[assignment]
        record = (key, value, partition)
        self.sent.append(record)
        return record


def encode(envelope: dict[str, Any], rng: random.Random) -> bytes:
    """The envelope as producers may send it: usually Python's msgpack, sometimes other forms
    of the same values (float32, wide ints and strings, as other encoders write them)."""
    if rng.random() < 0.85:
        return msgpack.packb(envelope, use_bin_type=True)
    return b"".join(_loose(envelope, rng))


def _loose(value: Any, rng: random.Random) -> list[bytes]:
    if isinstance(value, dict):
        out = [b"\xde" + struct.pack(">H", len(value))]
        for k, v in value.items():
            out += _loose(k, rng) + _loose(v, rng)
        return out
    if isinstance(value, list):
        out = [b"\xdc" + struct.pack(">H", len(value))]
        for v in value:
            out += _loose(v, rng)
        return out
    if isinstance(value, bool) or value is None:
        return [msgpack.packb(value)]
    if isinstance(value, int) and 0 <= value < 2**32:
        return [b"\xce" + struct.pack(">I", value)]
    if isinstance(value, int) and -(2**31) <= value < 0:
        return [b"\xd2" + struct.pack(">i", value)]
    if isinstance(value, float) and abs(value) < 1e38 and rng.random() < 0.5:
        return [b"\xca" + struct.pack(">f", value)]
    if isinstance(value, str):
        raw = value.encode()
        return [b"\xdb" + struct.pack(">I", len(raw)) + raw]
    return [msgpack.packb(value, use_bin_type=True)]


def damage(state: Tables, rng: random.Random) -> None:
    """Rewrite one stored row as no worker of ours writes it, but a restore or another tool
    might: other encodings, a repeated attribute, a bad version, undecodable recent ids, a
    count that is not an int. Both paths must still agree (the core hands such rows back)."""
    partition = rng.randrange(PARTITIONS)
    items = state.dbs[(tables.workflow_items, partition)]
    if not items:
        return
    key = rng.choice(sorted(items))
    item = Item.from_bytes(items[key])
    fields = [2, *item]
    parts = [msgpack.packb(f, use_bin_type=True) for f in fields]
    how = rng.randrange(5)
    if how == 0:
        parts[11] = b"".join(_loose(item.attrs, rng))  # attrs: wide headers, float32
    elif how == 1:
        parts[11] = b"\x82\xa1a\x01\xa1a\x02"  # {"a": 1, "a": 2}
    elif how == 2:
        parts[6] = msgpack.packb(rng.choice([-5, 0]))
    elif how == 3:
        ids, offsets = item.recent
        parts[13] = msgpack.packb([b"\x00\x02\xff\xfe" + ids, bytes(8) + offsets])
    else:
        counts = state.dbs[(tables.workflow_counts, partition)]
        row = counts_key(item.tenant, item.workflow)
        counts[row] = msgpack.packb([{item.state: 1.0}, {item.condition: 2**63 - 1}])
        return
    items[key] = b"\xdc\x00\x10" + b"".join(parts[:16])


class Tables:
    """RocksDB stand-ins: a dict per table and partition (``db.get`` is all a batch reads)."""

    def __init__(self) -> None:
        self.dbs = {(t, p): {} for t in TABLES for p in range(PARTITIONS)}

    def batch(self, partition: int, offset: int, behind: Staging | None) -> Staging:
        batch = Staging(partition, behind)
        batch.offset, batch.timestamp_ms = offset, NOW
        for table in TABLES:
            batch.databases[table] = self.dbs[(table, partition)]
        return batch

    def land(self, batch: Staging) -> None:
        batch.seal()
        for table, writes in batch.writes.items():
            db = self.dbs[(table, batch.partition)]
            for key, value in writes.items():
                if value is None:
                    db.pop(key, None)
                else:
                    db[key] = value


def outcome(batch: Staging, before: dict[str, Any]) -> dict[str, Any]:
    """What a handled record staged, and what it counted (dead letters' times left out)."""
    batch.seal()
    outputs = []
    for topic, key, value, headers in batch.outputs:
        if topic == workflow.app.topic_names.deadletter:
            record = msgpack.unpackb(value)
            record.pop("ts")
            value = repr(record).encode()
        outputs.append((topic, key, value, list(headers)))
    return {
        "writes": {table.name: dict(rows) for table, rows in batch.writes.items() if rows},
        "outputs": outputs,
        "notes": sorted(batch.notes),
        "sizes": {getattr(k, "name", k): n for k, n in batch.sizes.items()},
        "largest": batch.largest,
        "metrics": {name: delta(getattr(metrics, name), was) for name, was in before.items()},
    }


def counters() -> dict[str, Any]:
    values = {}
    for name in ("applied", "deadlettered", "duplicates", "replayed", "rerouted"):
        value = getattr(metrics, name)
        values[name] = dict(value) if isinstance(value, dict) else value
    return values


def delta(now: Any, was: Any) -> Any:
    if isinstance(now, dict):
        return {k: v - was.get(k, 0) for k, v in now.items() if v != was.get(k, 0)}
    return now - was


async def check(events: int, seed: int, damaged: float = 0.0) -> dict[str, int]:
    """``damaged``: the share of events before which a stored row is damaged (:func:`damage`)."""
    rng = random.Random(seed)
    for (tenant, name), spec in DEFINITIONS.items():
        registry.put(parse_definition(tenant, name, spec), (0, 0))
    workflow.now_ms = lambda: NOW  # type: ignore[assignment]  # both paths, one clock
    core = workflow.core
    assert core is not None, "statekeeper-native is not installed: run `make deps`"
    case, state = Case(rng), Tables()
    behind: Staging | None = None  # a batch not in RocksDB yet, as while acks travel
    seen = {"events": 0, "compiled": 0, "python": 0}
    for n in range(events):
        key, value, partition = case.record(state)
        offset = case.offsets[partition] if rng.random() > 0.05 else max(0, n - 50)
        case.offsets[partition] += 1
        record = ConsumerRecord(
            workflow.events_name, partition, offset, NOW, 0, key, value, None, 0, 0, ()
        )
        if rng.random() < damaged:
            damage(state, rng)
        if behind is not None and (behind.partition != partition or rng.random() < 0.3):
            state.land(behind)
            behind = None
        results = []
        for compiled in (False, True):
            batch, before = state.batch(partition, offset, behind), counters()
            metrics.native = 0
            with staging(batch):
                if not (compiled and workflow.apply_compiled(batch, [record], 0, 1) == 1):
                    await workflow.pipeline.handle_record(InputRecord(record))
            if compiled:
                seen["compiled" if metrics.native else "python"] += 1
                for kind in (
                    outcome(batch, before)["metrics"]["applied"] if not metrics.native else ()
                ):
                    name = f"applied by python: {kind}"  # types the core leaves to Python
                    seen[name] = seen.get(name, 0) + 1
            # the same counters moved, whichever path: undo them for the second run
            results.append((batch, outcome(batch, before)))
            for name, was in before.items():
                setattr(metrics, name, type(getattr(metrics, name))(was))
        (python_batch, expected), (_, got) = results
        if got != expected:
            print(f"event {n} differs: {msgpack.unpackb(value) if value else value!r}")
            print(f"  key {key!r} partition {partition} offset {offset}")
            print(f"  python:   {expected}")
            print(f"  compiled: {got}")
            raise SystemExit(1)
        if behind is None and rng.random() < 0.5:
            python_batch.seal()
            behind = python_batch  # the next record of this partition reads through it
        else:
            if behind is not None:
                state.land(behind)
                behind = None
            state.land(python_batch)
        seen["events"] += 1
    return seen


def check_partial() -> str:
    """A store that fails half-way (the history row's byte count is no number, so the item
    row is staged and the history row is not): the record must not go to the Python path,
    which would take the half-staged item for a replay."""
    for (tenant, name), spec in DEFINITIONS.items():
        registry.put(parse_definition(tenant, name, spec), (0, 0))
    key = b"acme/partial"
    value = msgpack.packb(
        {"v": 1, "id": "p1", "type": "workflow.start", "tenant": "acme", "key": "partial",
         "ts": NOW, "data": {"workflow": "flow"}}
    )  # fmt: skip
    partition = python_partition(key, PARTITIONS)
    record = ConsumerRecord(workflow.events_name, partition, 0, NOW, 0, key, value, None, 0, 0, ())
    batch = Tables().batch(partition, 0, None)
    batch.sizes[tables.workflow_history] = "many"
    try:
        handed_back = workflow.apply_compiled(batch, [record], 0, 1) != 1
    except Exception as exc:
        return f"raised {type(exc).__name__}, items staged: {bool(batch.writes)}"
    return f"returned, handed back: {handed_back}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--damaged", type=float, default=0.0, help="see damage(); e.g. 0.02")
    parser.add_argument("--partial", action="store_true", help="see check_partial()")
    args = parser.parse_args()
    if args.partial:
        print(check_partial())
        sys.exit(0)
    seen = asyncio.run(check(args.events, args.seed, args.damaged))
    print(json.dumps(seen))
    sys.exit(0)


if __name__ == "__main__":
    main()
