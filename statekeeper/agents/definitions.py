"""Workflow definitions: known to every worker, in order with the events that use them.

``workflow.define`` records arrive on the compacted definitions topic. Every worker reads
that topic whole (no consumer group) and validates each record itself — validation is
deterministic, so all workers agree. The agent that owns a partition also dead-letters
invalid definitions and republishes valid ones, with their source offset, to an internal
compacted topic. The registry reads both: after compaction a bad redefinition may be the
only record left for its key in the source topic, but the accepted topic still holds the
last good one. A start for a workflow the registry does not know first waits until the
registry has read the source topic up to its current end, so a definition produced before
the start is always seen.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faust import current_event

from statekeeper import codec
from statekeeper.agents.pipeline import EventPipeline
from statekeeper.app import app
from statekeeper.connections import kafka_options
from statekeeper.stores.definitions import DefinitionRegistry, WorkflowDefinition, parse_definition
from statekeeper.topics.envelope import Envelope, decode_envelope
from statekeeper.topics.rejections import Rejected

logger = logging.getLogger(__name__)

DEFINE_TYPES = frozenset({"workflow.define"})
CATCH_UP_TIMEOUT_S = 5.0

registry = DefinitionRegistry()
app.ready_conditions.append(registry.caught_up.is_set)
source_name = app.topic_names.workflow_definitions
accepted_name = app.topic_names.accepted_definitions(app.settings.app_id)
accepted_topic = app.topic(accepted_name, partitions=1)


async def handle_define(envelope: Envelope) -> bool:
    """Validate (a Rejected is dead-lettered) and republish with the source offset."""
    parse_definition(envelope.tenant, envelope.key, envelope.data)
    event = current_event()
    assert event is not None, "called outside stream iteration"
    message = event.message
    body = {"partition": message.partition, "offset": message.offset, "event": envelope.data}
    await accepted_topic.send(key=envelope.record_key, value=codec.pack(body))
    return True


pipeline = EventPipeline(app, source_name, DEFINE_TYPES, handle_define, keyed=False)


@app.agent(app.topic(source_name))
async def workflow_definitions(stream):  # type: ignore[no-untyped-def]
    """Dead-letter invalid definitions; publish the accepted ones."""
    async for event in stream.events():
        await pipeline.process(event)


class DefinitionFollower:
    """Reads the source and accepted definition topics into the registry, forever."""

    def __init__(self) -> None:
        self.positions: dict[TopicPartition, int] = {}
        self.progress = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **kafka_options(app.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self.consumer = consumer
        try:
            partitions = [TopicPartition(accepted_name, 0)] + [
                TopicPartition(source_name, p) for p in range(app.settings.partitions)
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            await self._follow(consumer, partitions)
        finally:
            self.consumer = None
            await consumer.stop()

    async def _follow(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        start_ends = await consumer.end_offsets(partitions)
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    _apply(record)
            for tp in partitions:
                self.positions[tp] = await consumer.position(tp)
            self.progress.set()
            self.progress.clear()
            if not registry.caught_up.is_set() and all(
                self.positions[tp] >= end for tp, end in start_ends.items()
            ):
                logger.info("definitions loaded: %d workflows", len(registry))
                registry.caught_up.set()

    async def catch_up(self) -> None:
        """Wait until every definition produced before now has been read (bounded)."""
        consumer = self.consumer
        if consumer is None:
            return
        wanted = await consumer.end_offsets(
            [TopicPartition(source_name, p) for p in range(app.settings.partitions)]
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_TIMEOUT_S
        while any(self.positions.get(tp, 0) < end for tp, end in wanted.items()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning("definitions did not catch up within %ss", CATCH_UP_TIMEOUT_S)
                return
            try:
                await asyncio.wait_for(self.progress.wait(), remaining)
            except TimeoutError:
                return


follower = DefinitionFollower()


@app.task
async def follow_definitions() -> None:
    await follower.run()


async def lookup(tenant: str, name: str) -> WorkflowDefinition | None:
    """The definition, reading any definition produced before this call if needed."""
    found = registry.get(tenant, name)
    if found is None:
        await follower.catch_up()
        found = registry.get(tenant, name)
    return found


def _apply(record: ConsumerRecord) -> None:
    if record.key is None or record.value is None:
        return
    tenant, _, name = record.key.decode(errors="replace").partition("/")
    if record.topic == accepted_name:
        body = codec.unpack(record.value)
        source = (body["partition"], body["offset"])
        data = body["event"]
    else:
        try:
            envelope = decode_envelope(
                record.value, max_bytes=app.settings.max_event_bytes, types=DEFINE_TYPES
            )
        except Rejected:
            return
        tenant, name, data = envelope.tenant, envelope.key, envelope.data
        source = (record.partition, record.offset)
    try:
        registry.put(parse_definition(tenant, name, data), source)
    except Rejected:
        return
