"""The batched input path: read owned partitions in bulk, apply a batch at a time.

faust's per-record stream delivers a few thousand records a second on our machine, whatever
the handler does (README "Performance"). A pattern on this path keeps faust for what it
does well — group membership, the partition assignment its tables follow, table recovery
and standbys, routing queries to owners — and reads its input topic itself:

1. one aiokafka consumer (no group membership: faust's assignment decides) reads the input
   partitions whose tables this worker owns, from the offsets committed for them under the
   group ``{app id}-{pattern}``;
2. each partition's records are handled in offset order through the pattern's
   :class:`~statekeeper.agents.pipeline.EventPipeline` (a pipeline's ``fast`` path, the
   compiled workflow core, is offered each record first and hands back what it does not
   take); table writes and output records are staged (:mod:`statekeeper.stores.staged`),
   clock work (deadlines) runs first;
3. everything staged is produced — output records and one changelog record per written
   key — and every acknowledgement awaited; then RocksDB gets one write batch per table
   partition, holding faust's persisted changelog offset (so faust's own recovery never
   re-reads what is already there); then the input offsets are committed (at most every
   ``COMMIT_EVERY_S``, a fifth of a second).

Step 3 overlaps the next batch's step 2: while a batch's acknowledgements travel, the records
fetched meanwhile are handled on top of it (reads see its staged writes), and the next batch
keeps taking what is fetched until they are in (up to ``MAX_HANDLED`` records), so a slow
acknowledgement is spent handling, not waiting. The next batch is built and queued once
every acknowledgement of the one before has come, so nothing is sent until every record
before it has landed; the landed batch's RocksDB write and commit follow right after, while
the next one travels. If Kafka refuses a batch, the one handled on top of it is dropped and
both are read again. Clock work waits for the batch in flight: it scans RocksDB.

A crash before the acknowledgements re-reads the batch against the state before it. A crash
after them and before the RocksDB write leaves the changelog ahead of RocksDB; faust's
recovery replays it at the next start, and the batch is read again. Either way handlers are
replay-safe (a record already applied is recognised by its id and source offset): outputs
may repeat, byte-identical, nothing is lost. Queries see a batch once RocksDB has it, after
its outputs were acknowledged and, when records kept coming, the next batch was handled: a
reader of the status or notice stream can be ahead of the HTTP answer by a few milliseconds
at low load, up to one batch's handling time (a fifth of a second) under a backlog.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TableT
from rocksdict import WriteBatch

from statekeeper.agents.pipeline import (
    EXIT_CANNOT_STORE,
    EventPipeline,
    is_storage_failure,
    murmur2_partition,
    processed_offsets,
)
from statekeeper.app import app
from statekeeper.compiled import compiled_module
from statekeeper.connections import kafka_options
from statekeeper.stores.scan import active_partitions
from statekeeper.stores.staged import NO_HEADERS, Headers, Staging, staging

logger = logging.getLogger(__name__)

OFFSET_KEY = RocksDBStore.offset_key  # where faust keeps a partition's changelog offset
MAX_RECORDS = 2_000  # per fetch, all partitions together (see _queue: one request per flush)
MAX_HANDLED = 10_000  # records on top of a batch in flight after which no fetch is added
MAX_BATCH_BYTES = 1_000_000  # one produce batch per partition and flush; broker limit 1 MiB
YIELD_EVERY = 50  # records handled between two chances for the web server to answer
COMMIT_EVERY_S = 0.2  # input offsets committed at most this often (a crash re-reads that much)
EXIT_SOFTWARE = 70  # an internal error: restart; uncommitted records are read again

batched_inputs: dict[str, BatchedInput] = {}
"""Input topic -> the runner reading it (for lag and freshness figures)."""

Row = tuple[bytes | None, bytes | None, Headers]
Part = list[Row] | dict[bytes, bytes | None]
"""Records for one produce destination: output rows, or one batch's writes to a table."""
ProduceBatch = Any
"""aiokafka's BatchBuilder, or the compiled core's ProduceBatch in its place."""

Tick = Callable[[int, int], Awaitable[None]]
"""Clock work for (partition, now in ms), staged like a record's."""


class InputRecord:
    """The shape :class:`EventPipeline` reads (``event.message``, ``event.value``)."""

    __slots__ = ("message", "value")

    def __init__(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.message = record
        self.value = record.value


class InFlight(NamedTuple):
    """A batch whose records are queued for Kafka, their acknowledgements not awaited."""

    batches: list[tuple[Staging, Sequence[ConsumerRecord[bytes, bytes]]]]
    sent: list[tuple[tuple[str, int], list[tuple[int, asyncio.Future[Any]]]]]
    """(topic, partition) and the (record count, acknowledgement) of its produce batches."""
    changelogs: dict[tuple[str, int], TableT]
    """Changelog (topic, partition) -> its table."""

    def stagings(self) -> dict[int, Staging]:
        return {batch.partition: batch for batch, _ in self.batches}


class Prepared(NamedTuple):
    """A batch's records in produce batches, not queued yet (:meth:`BatchedInput._prepare`)."""

    built: list[tuple[tuple[str, int], list[tuple[int, ProduceBatch]]]]
    """(topic, partition) and its (record count, produce batch) pairs."""
    changelogs: dict[tuple[str, int], TableT]
    """Changelog (topic, partition) -> its table."""


class BatchedInput:
    """Reads ``pipeline.topic`` for the partitions of ``owner`` this worker owns."""

    def __init__(
        self,
        pattern: str,
        pipeline: EventPipeline,
        owner: TableT,
        *,
        tick: Tick | None = None,
        tick_interval_s: float = 1.0,
        before_start: Callable[[], Awaitable[Any]] | None = None,
        after_write: Callable[[set[Any]], Awaitable[Any]] | None = None,
    ) -> None:
        """``after_write`` runs once a batch is in RocksDB (side effects outside Kafka),
        with the notes its handlers left (:attr:`Staging.notes`)."""
        self.pattern = pattern
        self.pipeline = pipeline
        self.owner = owner
        self.tick = tick
        self.tick_interval_s = tick_interval_s
        self.before_start = before_start
        self.after_write = after_write
        self.group = f"{app.settings.app_id}-{pattern}"
        self.lock = asyncio.Lock()
        self.partitions: set[int] = set()
        self.next_tick: dict[int, float] = {}
        self.partition_counts: dict[str, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.commit_in_flight: asyncio.Future[None] | None = None
        self.uncommitted: dict[TopicPartition, int] = {}
        """Input offsets of batches in RocksDB, to commit (:meth:`_commit_due`)."""
        self.committed_at = 0.0
        self.in_flight: InFlight | None = None
        self.handled: dict[int, tuple[Staging, Sequence[ConsumerRecord[bytes, bytes]]]] = {}
        """Partition -> its batch handled on top of the one in flight, not sent yet, and the
        records it took (:meth:`_batch`)."""
        batched_inputs[pipeline.topic] = self
        app.task(self.run)
        app.on_partitions_revoked.connect(self.on_revoked)

    def tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.pipeline.topic, partition)

    def owned(self) -> list[TopicPartition]:
        """The input partitions this worker reads now."""
        return [self.tp(p) for p in sorted(self.partitions)]

    def highwater(self, partition: int) -> int | None:
        """Last fetched high-water mark of an owned input partition."""
        if self.consumer is None or partition not in self.partitions:
            return None
        high: int | None = self.consumer.highwater(self.tp(partition))
        return high

    async def on_revoked(self, *args: Any, **kwargs: Any) -> None:
        """Finish the batch in hand before faust hands the partitions to someone else."""
        async with self.lock:
            await self._settle()
            self.partitions = set()
            if self.consumer is not None:
                self.consumer.assign([])

    async def run(self) -> None:
        """The worker task: until the app stops."""
        if self.before_start is not None:
            await self.before_start()
        options = kafka_options(app.settings)
        self.consumer = AIOKafkaConsumer(
            **options,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 2**20,
        )
        self.producer = AIOKafkaProducer(
            **options, acks="all", enable_idempotence=True, max_batch_size=MAX_BATCH_BYTES
        )
        await self.consumer.start()
        await self.producer.start()
        logger.info(
            "%s: batched input on %s (group %s)", self.pattern, self.pipeline.topic, self.group
        )
        try:
            while True:
                await self._cycle()
        except Exception:  # a bug here would stall the pattern silently: stop instead
            logger.critical("%s: batched input failed; exiting", self.pattern, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_SOFTWARE)
        finally:
            await self._settle()
            await self.consumer.stop()
            await self.producer.stop()

    async def _cycle(self) -> None:
        if not app.is_ready():
            await asyncio.sleep(0.05)
            return
        async with self.lock:
            if app.rebalancing:
                return
            owned = active_partitions(app, self.owner)
            if owned != self.partitions:
                await self._assign(owned)
            if not self.partitions:
                sleep = True
            else:
                sleep = False
                await self._batch()
        if sleep:
            await asyncio.sleep(0.1)

    async def _assign(self, owned: set[int]) -> None:
        """Read ``owned`` from their committed offsets (kept partitions too: cheap, safe)."""
        assert self.consumer is not None
        await self._settle()
        tps = [self.tp(p) for p in sorted(owned)]
        self.consumer.assign(tps)
        starts = await self._committed(tps)
        for tp in tps:
            if starts.get(tp) is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, starts[tp])
        self.partitions = owned
        self.next_tick = {p: 0.0 for p in owned}
        logger.info("%s: reading partitions %s from %s", self.pattern, sorted(owned), starts)

    async def _committed(self, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        """Our group's offsets; for a partition it never committed, faust's (an upgrade)."""
        assert self.consumer is not None
        starts = {tp: await self.consumer.committed(tp) for tp in tps}
        missing = [tp for tp, offset in starts.items() if offset is None]
        if missing:
            admin = AIOKafkaAdminClient(**kafka_options(app.settings))
            await admin.start()
            try:
                earlier = await admin.list_consumer_group_offsets(
                    app.settings.app_id, partitions=missing
                )
            finally:
                await admin.close()
            for tp, meta in earlier.items():
                if meta.offset >= 0:
                    starts[tp] = meta.offset
        return starts

    async def _batch(self) -> None:
        """Fetch and handle records; send them once the batch in flight has landed.

        The batch before is still travelling while the next one is handled (reads see its
        writes, :class:`~statekeeper.stores.staged.Staging`); the next one takes more of
        what is fetched until that batch's acknowledgements are in, then it is built and
        queued, and the landed one is written to RocksDB and committed (:meth:`_hand_over`).
        So a batch is only ever sent once every record before it has landed, as without the
        overlap, and the worker handles records instead of idling for the acknowledgement.
        """
        assert self.consumer is not None
        await self._commit_due()  # a quiet input still gets its last offsets committed
        # With a batch in flight or handled, take only what is fetched already; with nothing
        # fetched, send the handled batch (or finish the one in flight).
        busy = self.in_flight is not None or bool(self.handled)
        fetched = await self.consumer.getmany(
            timeout_ms=0 if busy else 100, max_records=MAX_RECORDS
        )
        now = time.monotonic()
        ticking = {p for p in self.partitions if self.tick and now >= self.next_tick.get(p, 0.0)}
        if busy and not fetched:
            await (self._send_handled() if self.handled else self._finish())
            return
        # Clock work scans RocksDB, so it runs with nothing in flight or handled on top. When
        # Kafka refuses a batch, what was fetched is dropped: it is read again after it.
        if busy and ticking:
            if self.handled and not await self._send_handled():
                return
            if not await self._finish():
                return
        behind = self.in_flight.stagings() if self.in_flight is not None else {}
        handled = self.handled
        for partition in sorted(self.partitions):
            records = fetched.get(self.tp(partition), [])
            if not records and partition not in ticking:
                continue
            before: Sequence[ConsumerRecord[bytes, bytes]] = []
            if partition in handled:
                batch, before = handled[partition]
            else:
                batch = Staging(partition, behind.get(partition))
            if partition in ticking:
                self.next_tick[partition] = now + self.tick_interval_s
            taken = await self._handle(batch, records, partition in ticking)
            handled[partition] = (batch, [*before, *taken] if before else taken)
        if handled and not self._keep_handling():
            await self._send_handled()

    def _keep_handling(self) -> bool:
        """Whether the batch in hand takes more records before it is sent: while the one in
        flight has not landed yet (so the wait for it is spent handling), up to a bound."""
        flight = self.in_flight
        if flight is None:
            return False
        futures = [future for _, chunks in flight.sent for _, future in chunks]
        if all(f.done() for f in futures):
            return False
        if any(f.done() and (f.cancelled() or f.exception() is not None) for f in futures):
            return False  # it will not land: handling on top of it would be dropped
        if sum(len(records) for _, records in self.handled.values()) >= MAX_HANDLED:
            return False
        return not any(batch.full() for batch, _ in self.handled.values())

    async def _send_handled(self) -> bool:
        """Build the batch in hand, queue it once the one in flight has landed; False if
        Kafka refused either (both are read again)."""
        batches = [self.handled[p] for p in sorted(self.handled)]
        self.handled = {}
        try:
            prepared = await self._prepare(batches)
        except Exception as exc:  # broker trouble (metadata): nothing of these is applied
            await self._read_again(exc)
            return False
        return await self._hand_over(batches, prepared)

    async def _hand_over(
        self,
        batches: list[tuple[Staging, Sequence[ConsumerRecord[bytes, bytes]]]],
        prepared: Prepared,
    ) -> bool:
        """Queue ``batches`` as soon as the batch in flight has landed, then write that one;
        False if Kafka refused either (both are read again).

        Its RocksDB write, the hook after it and the commit come after the next batch is
        queued, off the path from one acknowledgement to the next request: the next batch
        was handled on top of it already (its reads saw the staged writes), and RocksDB
        still never holds what Kafka has not acknowledged.
        """
        flight, self.in_flight = self.in_flight, None
        landed: dict[tuple[TableT, int], int] = {}
        if flight is not None:
            try:
                landed = await self._acknowledged(flight)
            except Exception as exc:  # it never landed: what was read on top is dropped
                await self._read_again(exc)
                return False
        failure = None
        try:
            self.in_flight = await self._queue(batches, prepared)
        except Exception as exc:  # broker trouble: nothing of these is applied
            failure = exc
        finally:  # landed: applied even when a stop cancels the queueing
            if flight is not None:
                await self._apply(flight, landed)
        for batch, _ in batches:
            batch.behind = None  # in RocksDB now
        if failure is not None:
            await self._read_again(failure)
            return False
        return True

    async def _handle(
        self, batch: Staging, records: list[ConsumerRecord[bytes, bytes]], tick: bool
    ) -> Sequence[ConsumerRecord[bytes, bytes]]:
        """Stage clock work and ``records`` into ``batch``; the records it took, sealed."""
        assert self.consumer is not None
        with staging(batch):
            if tick and self.tick is not None:
                await self.tick(batch.partition, int(time.time() * 1000))
            fast = self.pipeline.fast
            handled = yielded = 0
            while handled < len(records):
                stop = min(yielded + YIELD_EVERY, len(records))
                start = handled
                if fast is not None:
                    handled = fast(batch, records, handled, stop)
                # It stops early at a record it leaves to the pipeline, or once it filled the
                # batch (the clock work may have filled it before: a record goes in anyway).
                if handled < stop and not (handled > start and batch.full()):
                    record = records[handled]
                    batch.offset, batch.timestamp_ms = record.offset, record.timestamp
                    await self.pipeline.handle_record(InputRecord(record))
                    handled += 1
                if batch.full() and handled < len(records):  # the rest in the next batch
                    self.consumer.seek(self.tp(batch.partition), records[handled - 1].offset + 1)
                    records = records[:handled]
                    break
                if handled >= yielded + YIELD_EVERY:
                    yielded = handled
                    await asyncio.sleep(0)  # let queries in: a batch is CPU-bound
        batch.seal()
        return records

    async def _finish(self) -> bool:
        """Await the batch in flight, write it to RocksDB, commit it; False if it failed.

        The commit (:meth:`_commit_due`) is not awaited here: the next batch is read and
        handled while it travels, and the next commit (or a seek, or a handover) waits for it
        first, so commits stay in order. A crash before it lands reads the batch again.
        """
        flight, self.in_flight = self.in_flight, None
        if flight is None:
            return True
        try:
            changelog_offsets = await self._acknowledged(flight)
        except Exception as exc:
            await self._read_again(exc)
            return False
        await self._apply(flight, changelog_offsets)
        return True

    async def _apply(
        self, flight: InFlight, changelog_offsets: dict[tuple[TableT, int], int]
    ) -> None:
        """Write a landed batch to RocksDB, run the hook after it, commit when due."""
        for batch, records in flight.batches:
            self._write(batch, changelog_offsets)
            if records:
                processed_offsets[(self.pipeline.topic, batch.partition)] = records[-1].offset
                self.uncommitted[self.tp(batch.partition)] = records[-1].offset + 1
        if self.after_write is not None:
            await self.after_write(set().union(*(batch.notes for batch, _ in flight.batches)))
        await self._commit_due()  # after the hook: a crash before it reads the batch again

    async def _commit_due(self, *, now: bool = False) -> None:
        """Commit the offsets of applied batches, at most every :data:`COMMIT_EVERY_S`.

        A commit per batch cost the worker and the broker a request every few milliseconds
        under load; what it saves is bounded re-reading after a crash, which is replay-safe.
        """
        if not self.uncommitted:
            return
        if not now and time.monotonic() - self.committed_at < COMMIT_EVERY_S:
            return
        offsets, self.uncommitted = self.uncommitted, {}
        self.committed_at = time.monotonic()
        await self._settle_commit()
        self.commit_in_flight = asyncio.ensure_future(self._commit(offsets))

    async def _read_again(self, exc: Exception) -> None:
        """Kafka did not take a batch: apply nothing of it, read on from the committed offsets."""
        logger.warning("%s: batch not applied (%r); reading it again", self.pattern, exc)
        await self._assign(set(self.partitions))
        await asyncio.sleep(0.5)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # applied already: a later commit covers it
            logger.warning("%s: commit failed (%r); the next batch commits", self.pattern, exc)

    async def _settle(self) -> None:
        """Finish the batch in flight, commit every applied batch and wait for the commit.

        Records handled on top of it and not sent are dropped: every caller reads on from
        the committed offsets (:meth:`_assign`), or gives the partitions up, or stops.
        """
        self.handled = {}
        await self._finish()
        await self._commit_due(now=True)
        await self._settle_commit()

    async def _settle_commit(self) -> None:
        commit, self.commit_in_flight = self.commit_in_flight, None
        if commit is not None:
            await commit

    async def _prepare(
        self, batches: list[tuple[Staging, Sequence[ConsumerRecord[bytes, bytes]]]]
    ) -> Prepared:
        """Every output and changelog record of ``batches`` in produce batches, not queued.

        Records go out as one produce batch per topic partition (the idempotent producer
        keeps them in order); the per-record ``send`` path costs more than the handlers.
        Built while the batch before is in flight when that one has not landed by the time
        the next fetch finds nothing, so that only queueing them waits for it; when it has
        landed while the batch was handled, the build comes after the acknowledgement.
        """
        stagings = [batch for batch, _ in batches]
        # Metadata first: a send_batch that has to fetch a topic's metadata yields to the
        # sender, which would then send the batches queued so far in a request of their own.
        topics = {output[0] for batch in stagings for output in batch.outputs}
        topics.update(t.changelog_topic.get_topic_name() for b in stagings for t in b.writes)
        counts = {topic: await self._partition_count(topic) for topic in topics}
        outputs: dict[tuple[str, int], list[Row]] = {}
        changelogs: dict[tuple[str, int], tuple[TableT, list[dict[bytes, bytes | None]]]] = {}
        for batch in stagings:
            for topic, key, value, headers in batch.outputs:
                partition = partition_for(key, counts[topic])
                outputs.setdefault((topic, partition), []).append((key, value, headers))
            for table, writes in batch.writes.items():
                where = (table.changelog_topic.get_topic_name(), batch.partition)
                changelogs.setdefault(where, (table, []))[1].append(writes)
        # Changelog rows are read from the staged writes as they are appended: a list of them
        # all, made at once, costs more in garbage collection than the appends themselves.
        destinations: list[tuple[tuple[str, int], Sequence[Part]]] = [
            (where, [rows]) for where, rows in outputs.items()
        ]
        destinations += [(where, writes) for where, (_, writes) in changelogs.items()]
        built = [
            (where, await self._build(where[0], where[1], parts)) for where, parts in destinations
        ]
        tables = {where: table for where, (table, _) in changelogs.items()}
        return Prepared(built, tables)

    async def _queue(
        self,
        batches: list[tuple[Staging, Sequence[ConsumerRecord[bytes, bytes]]]],
        prepared: Prepared,
    ) -> InFlight:
        """Queue the produce batches of ``prepared``; acknowledgements pending.

        Queued with no yield in between (their topics' metadata is known since
        :meth:`_prepare`), so the sender finds them all and sends one request.
        """
        assert self.producer is not None
        sent: list[tuple[tuple[str, int], list[tuple[int, asyncio.Future[Any]]]]] = []
        for where, builders in prepared.built:
            topic, partition = where
            sent.append(
                (
                    where,
                    [
                        (count, await self.producer.send_batch(builder, topic, partition=partition))
                        for count, builder in builders
                    ],
                )
            )
        return InFlight(batches, sent, prepared.changelogs)

    async def _acknowledged(self, flight: InFlight) -> dict[tuple[TableT, int], int]:
        """Await every acknowledgement of ``flight``; the last changelog offset per partition."""
        offsets: dict[tuple[TableT, int], int] = {}
        for (topic, partition), chunks in flight.sent:
            last = -1
            for count, future in chunks:
                last = (await future).offset + count - 1
            table = flight.changelogs.get((topic, partition))
            if table is not None:
                offsets[(table, partition)] = last
        return offsets

    async def _build(
        self, topic: str, partition: int, parts: Sequence[Part]
    ) -> list[tuple[int, ProduceBatch]]:
        """Records of ``parts`` in produce batches (one unless they pass MAX_BATCH_BYTES), with
        counts. A part is a list of output rows or a dict of table writes (changelog records:
        no headers, None a tombstone).

        The compiled core's batch (:mod:`statekeeper.compiled`) takes a part in one call;
        aiokafka's takes a record per call, and a large flush takes tens of milliseconds to
        build that way, so it yields to queries now and then (nothing is queued yet).
        """
        assert self.producer is not None
        native = compiled_module()
        producer = self.producer

        def overflow() -> None:
            logger.warning(
                "%s: over %d bytes for %s[%d] in one flush, so two produce requests "
                "(README Performance, known limit)", self.pattern, MAX_BATCH_BYTES,
                topic, partition,
            )  # fmt: skip

        batches: list[tuple[int, ProduceBatch]] = []
        if native is not None:
            batch, count = native.ProduceBatch(MAX_BATCH_BYTES), 0
            for part in parts:
                start = 0
                while True:
                    add = batch.add_rows if isinstance(part, dict) else batch.add_records
                    added = add(part, start)
                    start, count = start + added, count + added
                    if start >= len(part):
                        break
                    overflow()
                    batches.append((count, batch))
                    batch, count = native.ProduceBatch(MAX_BATCH_BYTES), 0
            batch.close()  # complete: the sender need not wait for more records
            batches.append((count, batch))
            return batches
        builder, count = producer.create_batch(), 0
        for n, (key, value, headers) in enumerate(_rows(parts), 1):
            if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                overflow()
                batches.append((count, builder))
                builder, count = producer.create_batch(), 0
                builder.append(key=key, value=value, timestamp=None, headers=headers)
            count += 1
            if n % (10 * YIELD_EVERY) == 0:
                await asyncio.sleep(0)
        builder.close()
        batches.append((count, builder))
        return batches

    async def _partition_count(self, topic: str) -> int:
        """Partitions of ``topic``; its metadata is then known to the producer."""
        count = self.partition_counts.get(topic)
        if count is None:
            assert self.producer is not None
            count = self.partition_counts[topic] = len(await self.producer.partitions_for(topic))
        return count

    def _write(self, batch: Staging, changelog_offsets: dict[tuple[TableT, int], int]) -> None:
        """One RocksDB write batch per table partition; fail-stop when the disk refuses."""
        try:
            for table, writes in batch.writes.items():
                rows = WriteBatch(raw_mode=True)
                for key, value in writes.items():
                    if value is None:
                        rows.delete(key)
                    else:
                        rows.put(key, value)
                offset = changelog_offsets[(table, batch.partition)]
                rows.put(OFFSET_KEY, str(offset).encode())
                table.data._db_for_partition(batch.partition).write(rows)  # type: ignore[attr-defined]
        except Exception as exc:
            if not is_storage_failure(exc):
                raise
            logger.critical(
                "cannot write table state in the data dir %s: %s. Disk full? Free space and "
                "restart the worker: the changelog already holds this batch and is replayed "
                "into RocksDB at start. Exiting (code %d).",
                app.settings.worker_data_dir, exc, EXIT_CANNOT_STORE,
            )  # fmt: skip
            logging.shutdown()
            os._exit(EXIT_CANNOT_STORE)


def partition_for(key: bytes | None, partitions: int) -> int:
    """The partition Kafka's default partitioner picks (random for no key)."""
    if key is None:
        return random.randrange(partitions)
    return murmur2_partition(key, partitions)


def _rows(parts: Sequence[Part]) -> Iterator[Row]:
    """The records of ``parts``: output rows as they are, table writes as changelog records
    (key, value, no headers; None a tombstone)."""
    for part in parts:
        if isinstance(part, dict):
            for key, value in part.items():
                yield key, value, NO_HEADERS
        else:
            yield from part
