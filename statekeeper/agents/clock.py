"""Clock ticks that let an agent act on deadlines inside its own stream.

faust timers cannot write tables (writes need a current event), and an agent only runs
when a record arrives. So each pattern with deadlines has an internal tick topic,
co-partitioned with its input topic: a timer sends one tick per partition this worker
owns, and the agent that reads the input topic reads the ticks too. Handling a tick
happens in-stream, in order with the partition's events, so expiry writes (and their
changelog tombstones) land exactly like any other change.
"""

from __future__ import annotations

import time

from faust.types import EventT, TableT, TopicT

from statekeeper import codec
from statekeeper.app import app
from statekeeper.stores.scan import active_partitions


def now_ms() -> int:
    return int(time.time() * 1000)


class PartitionClock:
    """Sends ticks to ``{prefix}{app id}-{pattern}-ticks`` for the partitions of ``table``."""

    def __init__(self, pattern: str, table: TableT, interval_s: float) -> None:
        self.name = app.topic_names.ticks(app.settings.app_id, pattern)
        self.topic: TopicT = app.topic(self.name)
        self.table = table
        app.timer(interval=interval_s, name=f"{pattern}-clock")(self.send_ticks)

    def is_tick(self, event: EventT) -> bool:
        return bool(event.message.topic == self.name)

    async def send_ticks(self) -> None:
        """One tick per owned partition; nothing while recovering or rebalancing."""
        if not app.is_ready():
            return
        tick = codec.pack({"v": 1, "ts": now_ms()})
        for partition in sorted(active_partitions(app, self.table)):
            await self.topic.send(value=tick, partition=partition)
