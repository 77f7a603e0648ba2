"""Workflow transitions per second, latency at a fixed offered load, point queries under load.

Run: ``make bench`` (or ``.venv/bin/python -m bench.workflow``). Writes
``bench/results/workflow.json``. Each figure is measured in the same run, on the same broker,
as the raw aiokafka consume-decode-produce loop (the ceiling for a Python worker here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import query_probe
from bench.common import (
    Deployment,
    RecordCounter,
    bring_up,
    cpu_seconds,
    git_revision,
    rss_mb,
    save,
    speed_probe_ms,
)
from statekeeper.agents.pipeline import murmur2_partition
from tests.support.kafka import delete_topics_starting_with

FLOW = {
    "states": ["draft", "sent"],
    "initial": "draft",
    "terminal": [],
    "transitions": [["draft", "sent"], ["sent", "draft"]],
}
PARTITIONS = 8


def envelope(kind: str, key: str, data: dict[str, Any], ts: int | None = None) -> dict[str, Any]:
    return {
        "v": 1,
        "id": uuid.uuid4().hex,
        "type": kind,
        "tenant": "acme",
        "key": key,
        "ts": ts if ts is not None else int(time.time() * 1000),
        "data": data,
    }


def backlog(items: int, moves: int, prefix: str = "") -> list[tuple[bytes, bytes]]:
    """``items`` starts, then ``moves`` legal transitions each, interleaved across items
    (named ``{prefix}item-{n}``)."""
    records = []
    for round_ in range(moves + 1):
        for n in range(items):
            key = f"{prefix}item-{n}"
            if round_ == 0:
                event = envelope("workflow.start", key, {"workflow": "flow"})
            else:
                event = envelope(
                    "workflow.transition", key, {"to": "sent" if round_ % 2 else "draft"}
                )
            records.append((f"acme/{key}".encode(), msgpack.packb(event)))
    return records


async def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=256 * 1024
    )
    await producer.start()
    started = time.monotonic()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(records) / (time.monotonic() - started)


async def create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


async def raw_baseline(bootstrap: str, records: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """getmany -> decode -> status -> per-partition batches -> commit; no per-record await."""
    run = uuid.uuid4().hex[:8]
    source, sink = f"raw-{run}-in", f"raw-{run}-out"
    await create_topics(bootstrap, [source, sink])
    await produce_all(bootstrap, source, records)
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=f"raw-{run}",
        auto_offset_reset="earliest", enable_auto_commit=False, max_partition_fetch_bytes=4 * 2**20,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    done, started, cpu0 = 0, None, time.process_time()
    try:
        while done < len(records):
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            started = started or time.monotonic()
            sends = []
            for tp, messages in batch.items():
                out = producer.create_batch()
                for message in messages:
                    event = msgpack.unpackb(message.value)
                    status = {
                        "v": 1,
                        "key": event["key"],
                        "to": event["type"],
                        "event_id": event["id"],
                    }
                    if (
                        out.append(key=message.key, value=msgpack.packb(status), timestamp=None)
                        is None
                    ):
                        sends.append(await producer.send_batch(out, sink, partition=tp.partition))
                        out = producer.create_batch()
                        out.append(key=message.key, value=msgpack.packb(status), timestamp=None)
                    done += 1
                sends.append(await producer.send_batch(out, sink, partition=tp.partition))
            await asyncio.gather(*sends)
            await consumer.commit()
        elapsed = time.monotonic() - (started or time.monotonic())
    finally:
        await consumer.stop()
        await producer.stop()
        delete_topics_starting_with(bootstrap, f"raw-{run}")
    return {
        "events": done,
        "seconds": round(elapsed, 3),
        "events_per_s": round(done / elapsed),
        "events_per_cpu_s": round(done / (time.process_time() - cpu0)),
    }


DRAIN_POLL_S = 0.05
"""How often the drain's progress is read: its end is seen that late at most (about 3% of
a 1.5 s drain; at 0.2 s, with a new client each time, it was up to 15%)."""


async def drain_rate(
    bootstrap: str, sink: str, expected: int, pid: int, alive: Any = lambda: True
) -> dict[str, Any]:
    """Output records per second from the first to the last of ``expected`` (same for both)."""
    started = time.monotonic()
    first: tuple[float, int, float] | None = None
    async with RecordCounter(bootstrap, sink, PARTITIONS) as counter:
        while (done := await counter.count()) < expected:
            if not alive():
                raise RuntimeError(f"the process under test exited after {done} output records")
            if first is None and done > 0:
                first = (time.monotonic(), done, cpu_seconds(pid))
            await asyncio.sleep(DRAIN_POLL_S)
            if time.monotonic() - started > 900:
                raise TimeoutError(f"only {done} of {expected} output records after 900 s")
    began, done_then, cpu0 = first or (started, 0, cpu_seconds(pid))
    elapsed = time.monotonic() - began
    events = expected - done_then
    return {
        "events": expected,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed),
        "events_per_cpu_s": round(events / max(cpu_seconds(pid) - cpu0, 1e-9)),
        "worker_rss_mb": round(rss_mb(pid), 1),
    }


PY_SPY = str(Path(sys.executable).with_name("py-spy"))
PEER_PYTHON = Path(__file__).resolve().parent.parent / ".venv-bench" / "bin" / "python"


async def peer_throughput(bootstrap: str, records: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The same backlog through the Quix Streams peer (``bench/peer_quix.py``)."""
    run = uuid.uuid4().hex[:8]
    source, sink = f"quix-{run}-in", f"quix-{run}-out"
    await create_topics(bootstrap, [source, sink])
    await produce_all(bootstrap, source, records)
    script = Path(__file__).with_name("peer_quix.py")
    state_dir = tempfile.mkdtemp(prefix="sk-bench-quix-")
    log = open(Path(state_dir) / "peer.log", "wb")  # noqa: SIM115 (closed below)
    peer = subprocess.Popen(
        [str(PEER_PYTHON), str(script), bootstrap, source, sink, state_dir],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        alive = lambda: peer.poll() is None  # noqa: E731
        return await drain_rate(bootstrap, sink, len(records), peer.pid, alive)
    finally:
        peer.terminate()
        peer.wait(30)
        log.close()
        delete_topics_starting_with(bootstrap, f"quix-{run}", f"changelog__quix-quix-{run}")


async def ours_throughput(
    dep: Deployment,
    records: list[tuple[bytes, bytes]],
    profile: Path | None = None,
    query_items: int = 0,
) -> dict[str, Any]:
    """Backlog produced while the worker is stopped; then time until every status is out.

    With ``profile``, py-spy samples the worker during the drain (raw collapsed stacks).
    With ``query_items``, ``bench.query_probe`` asks for items ``item-0`` … while the worker
    drains (at full load), and the result has their latencies.
    """
    worker = dep.start()
    await produce_all(
        dep.bootstrap,
        dep.topic("workflow.definitions"),
        [(b"acme/flow", msgpack.packb(envelope("workflow.define", "flow", FLOW)))],
    )
    await asyncio.sleep(1)
    worker.stop()
    await produce_all(dep.bootstrap, dep.topic("workflow.events"), records)
    worker = dep.start()
    assert worker.process is not None
    pid = worker.process.pid
    spy = None
    if profile is not None:
        spy = subprocess.Popen(
            [PY_SPY, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
             "--output", str(profile), "--nonblocking"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    stop = asyncio.Event()
    querier = None
    if query_items:
        querier = asyncio.create_task(query_process(worker.url, query_items, stop))
    result = await drain_rate(dep.bootstrap, dep.topic("workflow.status"), len(records), pid)
    if querier is not None:
        stop.set()
        latencies = await querier
        result["point_query"] = {
            "client": "process",
            "requests": len(latencies),
            "latency_ms": percentiles(latencies),
        }
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    worker.stop()
    return result


async def latency_under_load(
    dep: Deployment,
    rate: int,
    seconds: float,
    items: int,
    states: dict[int, str],
    query_client: str = "process",
) -> dict[str, Any]:
    """Open loop: events are due at fixed times; latency counts from the due time.

    Point queries come from a process of their own (``bench.query_probe``), or with
    ``query_client="inline"`` from this process's event loop, beside the load generator.
    """
    worker = dep.start()
    status_topic = dep.topic("workflow.status")
    collector = await Collector.start(dep.bootstrap, status_topic)
    query_latencies: list[float] = []
    stop = asyncio.Event()

    async def queries() -> None:
        if query_client == "process":
            query_latencies.extend(await query_process(worker.url, items, stop))
        else:
            query_latencies.extend(await query_probe.probe(worker.url, items, stop))

    querier = asyncio.create_task(queries())

    def transition(n: int, due_ms: int) -> tuple[bytes, bytes]:
        n %= items  # every transition legal: to the other state than the item's (``states``)
        target = states[n] = "draft" if states[n] == "sent" else "sent"
        event = envelope("workflow.transition", f"item-{n}", {"to": target}, ts=due_ms)
        return f"acme/item-{n}".encode(), msgpack.packb(event)

    events_topic = status_topic.replace("workflow.status", "workflow.events")
    sent, send_lags, begin = await offer(dep.bootstrap, events_topic, rate, seconds, transition)
    await asyncio.sleep(3)
    stop.set()
    await asyncio.gather(collector.stop(), querier)
    async with aiohttp.ClientSession() as http, http.get(f"{worker.url}/metrics") as reply:
        handler_side = handler_latency(await reply.text())
    worker.stop()
    return {
        **collector.result(rate, seconds, sent, send_lags, begin),
        "point_query": {
            "client": query_client,
            "requests": len(query_latencies),
            "latency_ms": percentiles(query_latencies),
            "handler_within_ms": handler_side,
        },
    }


async def raw_latency(bootstrap: str, rate: int, seconds: float, items: int) -> dict[str, Any]:
    """The same open loop through the raw aiokafka loop (``bench.raw_loop``): the floor."""
    run = uuid.uuid4().hex[:8]
    source, sink = f"rawlat-{run}-in", f"rawlat-{run}-out"
    await create_topics(bootstrap, [source, sink])
    loop = subprocess.Popen(
        [sys.executable, "-m", "bench.raw_loop", bootstrap, source, sink],
        stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    try:
        assert loop.stdout is not None
        await asyncio.to_thread(loop.stdout.readline)  # "raw loop: ready"
        await asyncio.sleep(1)  # its group joined and positioned at the end
        collector = await Collector.start(bootstrap, sink)

        def transition(n: int, due_ms: int) -> tuple[bytes, bytes]:
            key = f"item-{n % items}"
            event = envelope("workflow.transition", key, {"to": "sent"}, ts=due_ms)
            return f"acme/{key}".encode(), msgpack.packb(event)

        sent, send_lags, begin = await offer(bootstrap, source, rate, seconds, transition)
        await asyncio.sleep(3)
        await collector.stop()
        return collector.result(rate, seconds, sent, send_lags, begin)
    finally:
        loop.kill()
        loop.wait(10)
        delete_topics_starting_with(bootstrap, f"rawlat-{run}")


async def offer(
    bootstrap: str,
    topic: str,
    rate: int,
    seconds: float,
    event_for: Callable[[int, int], tuple[bytes, bytes]],
) -> tuple[int, list[float], float]:
    """Produce event n (``event_for(n, due ms)``: key, value) at its due time n / rate, for
    ``seconds``; the count sent, how late this process was at each tick (ms) and when it
    began (epoch seconds)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await producer.start()
    sent, begin = 0, time.time()
    send_lags: list[float] = []
    try:
        while (elapsed := time.time() - begin) < seconds:
            due = int(elapsed * rate) + 1  # event n is due at n / rate: sent from then on
            # One produce batch per partition and tick: per-record sends cost this process a
            # quarter of a core at 5,000/s, on the two cores the worker and broker share.
            batches: dict[int, Any] = {}
            if sent < due:  # how late this process sends: its own share of the latency
                send_lags.append(time.time() * 1000 - (begin + sent / rate) * 1000)
            while sent < due:
                key, value = event_for(sent, int((begin + sent / rate) * 1000))
                partition = murmur2_partition(key, PARTITIONS)
                batch = batches.get(partition) or batches.setdefault(
                    partition, producer.create_batch()
                )
                if batch.append(key=key, value=value, timestamp=None) is None:
                    await producer.send_batch(batch, topic, partition=partition)
                    batches[partition] = batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
                sent += 1
            for partition, batch in batches.items():
                await producer.send_batch(batch, topic, partition=partition)
            await asyncio.sleep(0.001)
        await producer.flush()
    finally:
        await producer.stop()
    return sent, send_lags, begin


class Collector:
    """Reads a status topic from its end: latency of each record from its event's due time."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.by_second: dict[int, list[float]] = {}  # due second -> latencies of its events
        self.to_built: list[float] = []  # due time -> the status record's batch was built
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(self._collect())

    @classmethod
    async def start(cls, bootstrap: str, topic: str) -> Collector:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest"
        )
        await consumer.start()
        await asyncio.sleep(1)
        return cls(consumer)

    async def _collect(self) -> None:
        while not self.stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=200)
            now = time.time() * 1000
            for messages in batch.values():
                for message in messages:
                    due_ms = msgpack.unpackb(message.value)["event_ts"]
                    self.by_second.setdefault(int(due_ms // 1000), []).append(now - due_ms)
                    self.to_built.append(message.timestamp - due_ms)

    async def stop(self) -> None:
        self.stopping.set()
        await self.task
        await self.consumer.stop()

    def result(
        self, rate: int, seconds: float, sent: int, send_lags: list[float], begin: float
    ) -> dict[str, Any]:
        """The figures of one open loop whose generator (:func:`offer`) began at ``begin``."""
        latencies = [latency for second in self.by_second.values() for latency in second]
        return {
            "offered_per_s": rate,
            "seconds": seconds,
            "sent": sent,
            "status_received": len(latencies),
            "latency_ms": percentiles(latencies),
            "generator_lag_ms": percentiles(send_lags),
            # the status record's timestamp is set when its produce batch is built: what
            # comes before it is the generator, the broker, the fetch and the handling; the
            # rest of "latency_ms" is the produce request, the broker and this process's fetch
            "due_to_built_ms": percentiles(self.to_built),
            "worst_seconds": worst_seconds(self.by_second, begin),
        }


async def query_process(url: str, items: int, stop: asyncio.Event) -> list[float]:
    """Run ``bench.query_probe`` against ``url`` until ``stop``; its latencies in ms."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.query_probe", url, "--items", str(items),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert probe.stdin is not None
    await stop.wait()
    probe.stdin.close()
    out, _ = await probe.communicate()
    if probe.returncode != 0:
        raise RuntimeError(f"bench.query_probe exited with {probe.returncode}")
    return list(json.loads(out))


def handler_latency(metrics: str) -> dict[str, Any]:
    """The worker's own view of the busiest GET route: the share of its requests handled
    within each bucket bound (its middleware times the handler; what the client sees on top
    is waiting for the event loop, the network and the client itself)."""
    counts: dict[str, dict[str, int]] = {}
    for line in metrics.splitlines():
        if line.startswith("statekeeper_http_request_duration_ms_bucket{") and (
            'method="GET",status="200"' in line
        ):
            labels, value = line.rsplit(" ", 1)
            route = labels.split('route="', 1)[1].split('"', 1)[0]
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            counts.setdefault(route, {})[bound] = int(value)
    if not counts:
        return {}
    route, buckets = max(counts.items(), key=lambda item: item[1].get("+Inf", 0))
    total = buckets.get("+Inf", 0) or 1
    return {"route": route, **{bound: round(n / total, 4) for bound, n in buckets.items()}}


def worst_seconds(by_second: dict[int, list[float]], begin: float, count: int = 3) -> list[dict]:
    """The seconds of the run whose events waited longest (a stall shows as one of them)."""
    worst = sorted(by_second.items(), key=lambda item: -max(item[1]))[:count]
    return [
        {"second": round(second - begin, 1), "events": len(values), **percentiles(values)}
        for second, values in worst
    ]


def _ratio(ours: dict[str, Any], other: dict[str, Any] | None) -> float | None:
    return round(ours["events_per_s"] / other["events_per_s"], 3) if other else None


def _median_ratio(turns: list[dict[str, Any]], name: str) -> float | None:
    ratios = [turn[name] for turn in turns if turn[name] is not None]
    return round(statistics.median(ratios), 3) if ratios else None


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)  # noqa: E731
    return {
        "p50": pick(0.5),
        "p90": pick(0.9),
        "p99": pick(0.99),
        "max": round(ordered[-1], 2),
        "mean": round(statistics.fmean(ordered), 2),
    }


async def main(
    items: int,
    moves: int,
    rates: list[int],
    seconds: float,
    baselines: bool = True,
    profile: Path | None = None,
    query_client: str = "process",
    rounds: int = 3,
) -> None:
    bootstrap, redis_url = bring_up()
    speed_at_start = speed_probe_ms()
    print(f"bench: speed probe {speed_at_start} ms (lower is faster)", flush=True)
    records = backlog(items, moves)
    root = Path(tempfile.mkdtemp(prefix="sk-bench-"))
    if baselines and not PEER_PYTHON.exists():
        print(f"bench: no {PEER_PYTHON} (make bench creates it): peer skipped", flush=True)
    dep: Deployment | None = None  # the round's; the last one's items take the open loops
    queried = Deployment(bootstrap, redis_url, root / "queried")
    # the backlog leaves every item in the state of its last move
    states = dict.fromkeys(range(items), "sent" if moves % 2 else "draft")
    try:
        # The VM's speed drifts within minutes: the raw loop, the peer and ours are measured
        # back to back in each round, and the ratios are taken within a round.
        turns: list[dict[str, Any]] = []
        for turn in range(1, rounds + 1):
            baseline = peer = None
            if baselines:
                print(f"bench: round {turn}/{rounds}, {len(records)} events: raw loop…", flush=True)
                baseline = await raw_baseline(bootstrap, records)
                print(f"  raw: {baseline['events_per_s']} events/s", flush=True)
                if PEER_PYTHON.exists():
                    print("bench: Quix Streams peer on the same backlog…", flush=True)
                    peer = await peer_throughput(bootstrap, records)
                    print(f"  quix: {peer['events_per_s']} events/s", flush=True)
            if dep is not None:
                dep.close()
            dep = Deployment(bootstrap, redis_url, root / f"throughput-{turn}")
            print("bench: statekeeper worker on the same backlog…", flush=True)
            ours = await ours_throughput(dep, records, profile if turn == 1 else None)
            print(f"  ours: {ours['events_per_s']} events/s", flush=True)
            turns.append(
                {
                    "raw_aiokafka": baseline,
                    "quix_streams": peer,
                    "statekeeper": ours,
                    "ratio_to_raw": _ratio(ours, baseline),
                    "ratio_to_peer": _ratio(ours, peer),
                    "speed_probe_ms": speed_probe_ms(),
                }
            )
        assert dep is not None  # rounds >= 1
        print("bench: the same backlog again, with point queries while it drains…", flush=True)
        saturated = await ours_throughput(queried, records, query_items=items)
        print(
            f"  ours: {saturated['events_per_s']} events/s, "
            f"point query {saturated['point_query']['latency_ms']}",
            flush=True,
        )
        loads = []
        for rate in rates:
            print(
                f"bench: open-loop {rate} events/s for {seconds:.0f} s with point queries…",
                flush=True,
            )
            load = await latency_under_load(dep, rate, seconds, items, states, query_client)
            print(f"  latency {load['latency_ms']}", flush=True)
            if baselines:
                print(f"bench: the raw aiokafka loop at {rate} events/s…", flush=True)
                raw = await raw_latency(bootstrap, rate, seconds, items)
                print(f"  raw latency {raw['latency_ms']}", flush=True)
                load["raw_aiokafka"] = raw
                load["latency_ratio_to_raw"] = {
                    q: round(load["latency_ms"][q] / raw["latency_ms"][q], 2)
                    for q in ("p50", "p99")
                    if raw["latency_ms"].get(q)
                }
            loads.append(load)
    finally:
        if dep is not None:
            dep.close()
        queried.close()
    last = turns[-1]
    result = {
        "revision": git_revision(),
        "speed_probe_ms_at_start": speed_at_start,
        "raw_aiokafka": last["raw_aiokafka"],
        "statekeeper": last["statekeeper"],
        "statekeeper_queried": saturated,
        "quix_streams": last["quix_streams"],
        "ratio_to_raw": _median_ratio(turns, "ratio_to_raw"),
        "ratio_to_peer": _median_ratio(turns, "ratio_to_peer"),
        "rounds": turns,
        "under_load": loads,
    }
    print(f"bench: wrote {save('workflow' if baselines else 'workflow-ours', result)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=25_000)
    parser.add_argument("--moves", type=int, default=3)
    parser.add_argument("--rates", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument(
        "--ours-only",
        action="store_true",
        help="skip the raw loop and the peer (A/B runs of our worker); writes workflow-ours.json",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="sample the worker with py-spy (pip install py-spy) while it drains the backlog",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="backlog measurements (raw loop, peer, ours back to back); ratios are medians",
    )
    parser.add_argument(
        "--query-client",
        choices=("process", "inline"),
        default="process",
        help="point queries from their own process (default) or this one's event loop",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    asyncio.run(
        main(
            args.items,
            args.moves,
            args.rates,
            args.seconds,
            baselines=not args.ours_only,
            profile=args.py_spy,
            query_client=args.query_client,
            rounds=args.rounds,
        )
    )
