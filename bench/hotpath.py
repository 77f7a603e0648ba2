"""The workflow hot path in one process, without a broker: CPU per event, step by step.

End-to-end runs (``bench.workflow``) vary by ±15% on our VM, too much to see a change of a
few percent. This harness runs the worker's own batched runner
(:mod:`statekeeper.agents.batched`) over the same backlog as ``bench.workflow``, in one
process: records are handled by the real pipeline and handlers, staged, built into real
aiokafka produce batches, written to real RocksDB tables (a temporary data dir) and
"committed". Only the broker is left out: ``send_batch`` acknowledges at once and the
commit goes nowhere. What it reports is therefore our code's CPU per event; the client's
fetch and the network are what the raw aiokafka baseline in ``bench.workflow`` measures.

    .venv/bin/python -m bench.hotpath [--items 10000] [--moves 3] [--batch 250] [--repeat 5]

Each run puts new items through (start, then ``moves`` transitions each) and prints µs of
CPU per event: handling (decode, validate, apply, stage), ``build`` (the produce batches)
and ``hand-over`` (queueing them once the batch before is acknowledged, then that one's
RocksDB write and commit); then the best and the median of the runs (the VM's speed drifts
by ±10% even in one process: compare best and median of alternated runs). ``--profile``
adds the top functions by own time (cProfile, which slows everything down about twofold).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("STATEKEEPER_VAR_DIR", tempfile.mkdtemp(prefix="sk-hotpath-"))
os.environ.setdefault("STATEKEEPER_PARTITIONS", "8")
os.environ.setdefault("STATEKEEPER_LOG_LEVEL", "warning")

from aiokafka import ConsumerRecord  # noqa: E402
from aiokafka.producer.message_accumulator import BatchBuilder  # noqa: E402

from bench.common import machine  # noqa: E402
from bench.workflow import FLOW, backlog  # noqa: E402
from statekeeper.agents import workflow  # noqa: E402
from statekeeper.agents.batched import MAX_BATCH_BYTES, BatchedInput  # noqa: E402
from statekeeper.agents.definitions import registry  # noqa: E402
from statekeeper.agents.pipeline import murmur2_partition  # noqa: E402
from statekeeper.stores import tables  # noqa: E402
from statekeeper.stores.definitions import parse_definition  # noqa: E402
from statekeeper.stores.staged import Staging  # noqa: E402
from statekeeper.stores.workflow import Item  # noqa: E402

PARTITIONS = 8
WORKFLOW_TABLES = (
    tables.workflow_items,
    tables.workflow_history,
    tables.workflow_counts,
    tables.workflow_deadlines,
    tables.workflow_retention,
)
next_offsets: dict[int, int] = {}
STATUS = workflow.status_name


class Acknowledging:
    """The producer and consumer calls the runner makes, answered in process.

    Produce batches are built by aiokafka's own builder (``create_batch``); ``send_batch``
    acknowledges at once with consecutive offsets per partition, as a broker would.
    """

    def __init__(self) -> None:
        self.next_offset: dict[tuple[str, int], int] = {}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(MAX_BATCH_BYTES, 0)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> Any:
        builder.close()  # what the sender does before it writes the batch to the wire
        where = (topic, partition)
        offset = self.next_offset.get(where, 0)
        self.next_offset[where] = offset + builder.record_count()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(offset=offset))
        return done

    async def commit(self, offsets: Any) -> None:
        return None

    def seek(self, tp: Any, offset: int) -> None:
        raise AssertionError("the harness hands over batches that fit")


def input_records(
    items: int, moves: int, run: int
) -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
    """``bench.workflow``'s backlog (items named for the ``run``) as the consumer would
    deliver it, per partition."""
    per_partition: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
    offsets = next_offsets  # offsets go on from run to run, as in one input topic
    now = int(time.time() * 1000)
    for key, value in backlog(items, moves, prefix=f"run{run}-"):
        partition = murmur2_partition(key, PARTITIONS)
        records = per_partition.setdefault(partition, [])
        offset = offsets[partition] = offsets.get(partition, -1) + 1
        records.append(
            ConsumerRecord(
                workflow.events_name,
                partition,
                offset,
                now,
                0,
                key,
                value,
                None,
                len(key),
                len(value),
                (),
            )  # fmt: skip
        )
    return per_partition


async def run(runner: BatchedInput, records: dict[int, list[Any]], batch: int) -> dict[str, float]:
    """Feed ``records`` through the runner, ``batch`` per partition per cycle, as it would."""
    spent = {"handle": 0.0, "build": 0.0, "hand-over": 0.0}
    cursor = dict.fromkeys(records, 0)
    clock = time.process_time
    while any(cursor[p] < len(rows) for p, rows in records.items()):
        t0 = clock()
        batches = []
        behind = runner.in_flight.stagings() if runner.in_flight is not None else {}
        for partition, rows in sorted(records.items()):
            chunk = rows[cursor[partition] : cursor[partition] + batch]
            cursor[partition] += len(chunk)
            if chunk:
                staged = Staging(partition, behind.get(partition))
                batches.append((staged, await runner._handle(staged, chunk, False)))
        t1 = clock()
        prepared = await runner._prepare(batches)
        t2 = clock()
        # the batch before acknowledged, these queued, the one before written and committed
        await runner._hand_over(batches, prepared)
        assert runner.in_flight is not None, "the harness's stand-in refused nothing"
        t3 = clock()
        spent["handle"] += t1 - t0
        spent["build"] += t2 - t1
        spent["hand-over"] += t3 - t2
    t0 = clock()
    assert await runner._finish()
    spent["hand-over"] += clock() - t0
    return spent


def check(stand_in: Acknowledging, items: int, moves: int, run: int, events: int) -> None:
    """Every event so far applied, and the run's items in RocksDB where their moves left them:
    a harness that measured a broken path would report a fine figure for nothing."""
    statuses = sum(n for (topic, _), n in stand_in.next_offset.items() if topic == STATUS)
    if statuses != events:
        raise SystemExit(f"hotpath: {statuses} status records for {events} events")
    wanted = "draft" if moves % 2 == 0 else "sent"
    for n in range(items):
        key = f"acme/run{run}-item-{n}".encode()
        db = tables.workflow_items.data._db_for_partition(murmur2_partition(key, PARTITIONS))  # type: ignore[attr-defined]
        stored = db.get(key)
        item = Item.from_bytes(stored) if stored is not None else None
        if item is None or (item.state, item.version) != (wanted, moves + 1):
            raise SystemExit(f"hotpath: {key!r} is {item}, not {wanted} at version {moves + 1}")


async def main(items: int, moves: int, batch: int, repeat: int, profile: bool) -> None:
    definition = parse_definition("acme", "flow", FLOW)
    registry.put(definition, (0, 0))
    runner = workflow.runner
    stand_in = Acknowledging()
    runner.producer = runner.consumer = stand_in  # type: ignore[assignment]
    runner.partitions = set(range(PARTITIONS))
    for table in WORKFLOW_TABLES:  # a worker opens them at start
        for partition in range(PARTITIONS):
            table.data._db_for_partition(partition)  # type: ignore[attr-defined]
    profiler = cProfile.Profile() if profile else None
    totals = []
    for run_ in range(repeat):
        records = input_records(items, moves, run_)
        events = sum(len(rows) for rows in records.values())
        started, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        spent = await run(runner, records, batch)
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        check(stand_in, items, moves, run_, events * (run_ + 1))
        steps = ", ".join(f"{step} {s / events * 1e6:.1f}" for step, s in spent.items())
        totals.append(cpu / events * 1e6)
        print(
            f"run {run_ + 1}/{repeat}: {events} events ({batch} per partition per cycle), "
            f"{totals[-1]:.1f} µs of CPU per event ({steps}), {events / wall:,.0f} events/s",
            flush=True,
        )
    totals.sort()
    print(
        f"hotpath: best {totals[0]:.1f}, median {totals[len(totals) // 2]:.1f} µs of CPU per "
        f"event on {machine()['cpu']} ({machine()['cores']} cores)"
    )
    if profiler is not None:
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--moves", type=int, default=3)
    parser.add_argument("--batch", type=int, default=250, help="records per partition per cycle")
    parser.add_argument("--repeat", type=int, default=5, help="runs, each on new items")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.items, args.moves, args.batch, args.repeat, args.profile))
