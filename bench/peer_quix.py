"""The peer: the workflow-status workload written idiomatically in Quix Streams.

Run by ``bench/workflow.py`` in its own virtualenv (``.venv-bench``, made by ``make bench``:
Quix Streams is a bench-only dependency and pins other versions of shared libraries), as
``python bench/peer_quix.py BOOTSTRAP SOURCE SINK STATE_DIR``. The same work per event as our
worker: decode the msgpack envelope, read the item's state from RocksDB (Quix's state store,
with its changelog topic), check the transition against the definition, write the new state,
and produce one msgpack status record. Quix's own defaults otherwise (at-least-once).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import msgpack
from quixstreams import Application, State
from quixstreams.models.serializers import Deserializer, Serializer

ALLOWED = {("draft", "sent"), ("sent", "draft")}


class MsgpackIn(Deserializer):
    def __call__(self, value: bytes, ctx: Any) -> Any:
        return msgpack.unpackb(value)


class MsgpackOut(Serializer):
    def __call__(self, value: Any, ctx: Any) -> bytes:
        return msgpack.packb(value)


def apply(event: dict[str, Any], state: State) -> dict[str, Any] | None:
    """One workflow event against the item's stored state; the status record or None."""
    item = state.get("item")
    now = int(time.time() * 1000)
    if event["type"] == "workflow.start":
        if item is not None:
            return None
        item = {"state": "draft", "version": 1, "recent": [event["id"]]}
        source = None
    else:
        if item is None or event["id"] in item["recent"]:
            return None
        target = event["data"]["to"]
        if (item["state"], target) not in ALLOWED:
            return None
        source = item["state"]
        item = {
            "state": target,
            "version": item["version"] + 1,
            "recent": (item["recent"] + [event["id"]])[-32:],
        }
    state.set("item", item)
    return {
        "v": 1,
        "tenant": event["tenant"],
        "key": event["key"],
        "from": source,
        "to": item["state"],
        "version": item["version"],
        "event_id": event["id"],
        "event_ts": event["ts"],
        "ts": now,
    }


def main(bootstrap: str, source: str, sink: str, state_dir: str) -> None:
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-{source}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
    )
    events = app.topic(source, value_deserializer=MsgpackIn())
    status = app.topic(sink, value_serializer=MsgpackOut())
    sdf = app.dataframe(events)
    sdf = sdf.apply(apply, stateful=True).filter(lambda record: record is not None)
    sdf.to_topic(status)
    app.run()


if __name__ == "__main__":
    main(*sys.argv[1:5])
