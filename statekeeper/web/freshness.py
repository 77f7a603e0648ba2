"""How far behind a table is: freshness headers on answers read from one partition.

A table reflects its input topic's partition up to the last record this worker handled.
The answer carries that offset (``X-Statekeeper-Offset``) and the records already in the
partition but not yet applied (``X-Statekeeper-Lag``, from the consumer's last fetched
high-water mark), so a client can tell a fresh answer from one that trails a backlog.
"""

from __future__ import annotations

from contextvars import ContextVar

from faust.types import TP

from statekeeper.agents.batched import batched_inputs
from statekeeper.agents.pipeline import processed_offsets
from statekeeper.app import app

OFFSET_HEADER = "X-Statekeeper-Offset"
LAG_HEADER = "X-Statekeeper-Lag"
PARTITION_HEADER = "X-Statekeeper-Partition"

answered_partition: ContextVar[int | None] = ContextVar("answered_partition", default=None)
"""Set by a view that answered from one local partition (see ``forward_to_owner``)."""


def _source_topics() -> dict[str, str]:
    names = app.topic_names
    return {
        "workflows": names.workflow_events,
        "sessions": names.session_events,
        "conversations": names.conversation_events,
        "resources": names.lifecycle_events,
    }


def freshness_headers(path: str, partition: int) -> dict[str, str]:
    """Offset and lag of the input partition behind an answer to ``path`` (``/v1/<family>/…``)."""
    family = path.strip("/").split("/")[1:2]
    topic = _source_topics().get(family[0]) if family else None
    if topic is None:
        return {}
    tp = TP(topic, partition)
    done = processed_offsets.get((topic, partition))
    if done is None:  # nothing handled since this worker took the partition: its start
        committed = getattr(app.consumer, "_committed_offset", {}).get(tp)
        done = committed - 1 if committed is not None else None
    headers = {PARTITION_HEADER: str(partition)}
    if done is not None:
        headers[OFFSET_HEADER] = str(done)
    high = highwater(tp)
    if high is not None:
        headers[LAG_HEADER] = str(lag(high, done))
    return headers


def highwater(tp: TP) -> int | None:
    """The consumer's last fetched high-water mark of ``tp``; None before any fetch."""
    batched = batched_inputs.get(tp.topic)
    if batched is not None:
        return batched.highwater(tp.partition)
    try:
        return app.consumer.highwater(tp)
    except (AssertionError, KeyError, RuntimeError):  # no fetch for it yet
        return None


def lag(high: int, done: int | None) -> int:
    """Records below ``high`` not yet handled, when ``done`` is the last handled offset."""
    return max(0, high - 1 - (done if done is not None else -1))
