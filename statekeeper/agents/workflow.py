"""State management: item events applied to the items table, one status record each."""

from __future__ import annotations

import logging
import time

from statekeeper import codec
from statekeeper.agents.definitions import lookup, registry
from statekeeper.agents.pipeline import EventPipeline
from statekeeper.app import app
from statekeeper.stores.tables import workflow_items
from statekeeper.stores.workflow import ITEM_TYPES, Item, apply_event
from statekeeper.topics.envelope import Envelope

logger = logging.getLogger(__name__)

status_topic = app.topic(app.topic_names.workflow_status)


async def handle_item_event(envelope: Envelope) -> bool:
    """Apply one item event; write the item and emit its status record."""
    key = envelope.record_key
    stored = workflow_items.get(key)
    item = Item.from_bytes(stored) if stored is not None else None
    workflow = item.workflow if item is not None else envelope.data.get("workflow")
    definition = await lookup(envelope.tenant, workflow) if isinstance(workflow, str) else None
    change = apply_event(item, envelope, definition, int(time.time() * 1000))
    if change is None:
        return False
    workflow_items[key] = change.item.to_bytes()
    await status_topic.send(key=key, value=codec.pack(change.status))
    return True


pipeline = EventPipeline(app, app.topic_names.workflow_events, ITEM_TYPES, handle_item_event)


@app.agent(app.topic(app.topic_names.workflow_events))
async def workflow_events(stream):  # type: ignore[no-untyped-def]
    """Apply item lifecycle commands in per-item order."""
    await registry.caught_up.wait()
    async for event in stream.events():
        await pipeline.process(event)
