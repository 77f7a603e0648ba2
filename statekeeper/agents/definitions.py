"""Workflow definitions: validated once by the owning worker, then known to every worker.

``workflow.define`` records arrive on the compacted definitions topic. The agent (one
owner per partition) validates them: invalid ones are dead-lettered, valid ones are
published to an internal compacted topic that every worker reads whole into its
:class:`DefinitionRegistry`. A bad redefinition therefore never shadows a good one.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from statekeeper import codec
from statekeeper.agents.pipeline import EventPipeline
from statekeeper.app import app
from statekeeper.stores.definitions import DefinitionRegistry, parse_definition
from statekeeper.topics.envelope import Envelope

logger = logging.getLogger(__name__)

registry = DefinitionRegistry()
app.ready_conditions.append(registry.caught_up.is_set)
accepted_topic = app.topic(
    app.topic_names.accepted_definitions(app.settings.app_id),
    partitions=1,
)


async def handle_define(envelope: Envelope) -> bool:
    definition = parse_definition(envelope.tenant, envelope.key, envelope.data)
    body = {**definition.as_dict(), "event_id": envelope.id, "event_ts": envelope.ts}
    await accepted_topic.send(key=envelope.record_key, value=codec.pack(body))
    return True


pipeline = EventPipeline(
    app,
    app.topic_names.workflow_definitions,
    frozenset({"workflow.define"}),
    handle_define,
    keyed=False,
)


@app.agent(app.topic(app.topic_names.workflow_definitions))
async def workflow_definitions(stream):  # type: ignore[no-untyped-def]
    """Validate definitions; publish the accepted ones to every worker."""
    async for event in stream.events():
        await pipeline.process(event)


@app.task
async def follow_accepted_definitions() -> None:
    """Read the accepted definitions from the start, then keep following them."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=app.settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    partition = TopicPartition(accepted_topic.get_topic_name(), 0)
    await consumer.start()
    try:
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        if end == 0:
            registry.caught_up.set()
        while True:
            batch = await consumer.getmany(partition, timeout_ms=500)
            for record in batch.get(partition, []):
                _apply_accepted(record.key, record.value)
            if not registry.caught_up.is_set() and await consumer.position(partition) >= end:
                logger.info("definitions loaded: %d workflows", len(registry))
                registry.caught_up.set()
    except asyncio.CancelledError:
        raise
    finally:
        await consumer.stop()


def _apply_accepted(key: bytes | None, value: bytes | None) -> None:
    if key is None:
        return
    tenant, _, name = key.decode().partition("/")
    if value is None:
        registry.remove(tenant, name)
        return
    body = codec.unpack(value)
    registry.put(parse_definition(tenant, name, body))
