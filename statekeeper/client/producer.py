"""Producing contract events: the envelope, ids, record keys and acknowledgements done right.

Each typed method builds one envelope (``v`` 1, an id — a UUID unless given —, the tenant,
the key, ``ts`` now unless given) and sends it under the record key ``{tenant}/{key}`` to the
topic its type belongs on, partitioned by aiokafka's default murmur2 partitioner exactly
like the workers expect. ``await`` returns once the broker acknowledged the record (acks=all)
with the :class:`Sent` receipt; its ``id`` is what to reuse when retrying, so a retry of an
event that did arrive has no effect.

Batching: the producer lingers ``linger_ms`` before sending a batch, so concurrent sends
(``asyncio.gather``) and :meth:`Producer.send_many` travel in few requests. Order per entity
is kept by :meth:`send_many` (records are queued in list order before any is awaited) and by
awaiting one send before the next; concurrent sends for one entity have no defined order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from statekeeper import codec
from statekeeper.client.exceptions import DeliveryError
from statekeeper.settings import Settings
from statekeeper.topics.names import TopicNames

EVENT_TYPES = frozenset(
    {
        "workflow.define",
        "workflow.start",
        "workflow.transition",
        "workflow.fail",
        "workflow.resume",
        "workflow.cancel",
        "workflow.annotate",
        "session.start",
        "session.update",
        "session.end",
        "conversation.message",
        "conversation.forget",
        "resource.register",
        "resource.touch",
        "resource.release",
    }
)
"""Every input event type of the contract (section 2)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event to send; ``id`` and ``ts`` are filled in when left out."""

    type: str
    key: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    ts: int | None = None
    tenant: str | None = None  # the producer's tenant when None

    def envelope(self, default_tenant: str) -> dict[str, Any]:
        """The contract envelope of this event."""
        return {
            "v": 1,
            "id": self.id or uuid.uuid4().hex,
            "type": self.type,
            "tenant": self.tenant or default_tenant,
            "key": self.key,
            "ts": self.ts if self.ts is not None else int(time.time() * 1000),
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class Sent:
    """Receipt of an acknowledged event: its id (reuse it to retry) and where it landed."""

    id: str
    type: str
    key: str
    topic: str
    partition: int
    offset: int
    envelope: dict[str, Any]


class Producer:
    """Typed, acknowledged sends of every event type of the contract, for one tenant."""

    def __init__(
        self,
        tenant: str,
        *,
        bootstrap_servers: str = "127.0.0.1:9092",
        topic_prefix: str = "",
        linger_ms: int = 5,
        **kafka_options: Any,
    ) -> None:
        self.tenant = tenant
        self.topics = TopicNames(topic_prefix)
        self._kafka = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, linger_ms=linger_ms, acks="all", **kafka_options
        )

    @classmethod
    def from_settings(cls, settings: Settings, tenant: str, **overrides: Any) -> Producer:
        """A producer reaching Kafka like the workers do (servers, TLS, SASL from settings)."""
        from statekeeper.connections import kafka_options

        options = {**kafka_options(settings), **overrides}
        return cls(tenant, topic_prefix=settings.topic_prefix, **options)

    async def start(self) -> Producer:
        await self._kafka.start()
        return self

    async def stop(self) -> None:
        """Send what is queued, then close the connections."""
        await self._kafka.stop()

    async def __aenter__(self) -> Producer:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- sending ---------------------------------------------------------------------------
    async def send(self, event: Event) -> Sent:
        """Send one event and wait for the broker's acknowledgement."""
        (sent,) = await self.send_many([event])
        return sent

    async def send_many(self, events: list[Event]) -> list[Sent]:
        """Queue every event in order (lingering batches them), then wait for every ack."""
        queued = [await self._queue(self._envelope_of(event)) for event in events]
        return list(await asyncio.gather(*queued))

    async def send_envelope(self, envelope: dict[str, Any], topic: str | None = None) -> Sent:
        """Send an envelope as it is (ids kept), e.g. one taken from the dead-letter topic."""
        (sent,) = await self.send_envelopes([(envelope, topic)])
        return sent

    async def send_envelopes(
        self, envelopes: list[tuple[dict[str, Any], str | None]]
    ) -> list[Sent]:
        """Send ready envelopes (to their type's topic, or the one given) in order, acked."""
        queued = [await self._queue(envelope, topic) for envelope, topic in envelopes]
        return list(await asyncio.gather(*queued))

    def _envelope_of(self, event: Event) -> dict[str, Any]:
        return event.envelope(self.tenant)

    async def _queue(
        self, envelope: dict[str, Any], topic: str | None = None
    ) -> asyncio.Future[Sent]:
        target = topic or self.topics.topic_for_type(str(envelope.get("type")))
        if target is None:
            raise ValueError(f"no topic takes events of type {envelope.get('type')!r}")
        key = f"{envelope['tenant']}/{envelope['key']}".encode()
        try:
            delivery = await self._kafka.send(target, key=key, value=codec.pack(envelope))
        except KafkaError as exc:
            raise DeliveryError(f"{envelope['type']} {envelope['id']} not sent: {exc}") from exc
        return asyncio.ensure_future(_receipt(delivery, envelope, target))

    # --- workflows ---------------------------------------------------------------------------
    async def define_workflow(
        self,
        name: str,
        *,
        states: list[str],
        initial: str,
        terminal: list[str],
        transitions: list[tuple[str, str]] | list[list[str]],
        sla_seconds: dict[str, int] | None = None,
        id: str | None = None,
    ) -> Sent:
        """``workflow.define``: (re)define a workflow of this tenant."""
        data = {
            "states": list(states),
            "initial": initial,
            "terminal": list(terminal),
            "transitions": [list(pair) for pair in transitions],
        }
        return await self._typed("workflow.define", name, data, id, sla_seconds=sla_seconds)

    async def start_item(
        self,
        item: str,
        workflow: str,
        *,
        attrs: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> Sent:
        """``workflow.start``: the item enters the workflow's initial state."""
        return await self._typed("workflow.start", item, {"workflow": workflow}, id, attrs=attrs)

    async def transition(
        self,
        item: str,
        to: str,
        *,
        reason: str | None = None,
        actor: str | None = None,
        expected_version: int | None = None,
        id: str | None = None,
    ) -> Sent:
        """``workflow.transition``: move the item to ``to`` if the workflow allows it."""
        optional = {"reason": reason, "actor": actor, "expected_version": expected_version}
        return await self._typed("workflow.transition", item, {"to": to}, id, **optional)

    async def fail(
        self, item: str, error: str, *, retryable: bool | None = None, id: str | None = None
    ) -> Sent:
        """``workflow.fail``: the item stops, failed, at its current state."""
        data = {"error": error}
        return await self._typed("workflow.fail", item, data, id, retryable=retryable)

    async def resume(self, item: str, *, reason: str | None = None, id: str | None = None) -> Sent:
        """``workflow.resume``: a failed item becomes active again where it stopped."""
        return await self._typed("workflow.resume", item, {}, id, reason=reason)

    async def cancel(self, item: str, *, reason: str | None = None, id: str | None = None) -> Sent:
        """``workflow.cancel``: the item is cancelled."""
        return await self._typed("workflow.cancel", item, {}, id, reason=reason)

    async def annotate(self, item: str, attrs: dict[str, Any], *, id: str | None = None) -> Sent:
        """``workflow.annotate``: merge business attributes into the item."""
        return await self._typed("workflow.annotate", item, {"attrs": attrs}, id)

    # --- sessions ----------------------------------------------------------------------------
    async def start_session(
        self,
        session: str,
        user: str,
        *,
        idle_timeout_s: int | None = None,
        max_lifetime_s: int | None = None,
        data: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> Sent:
        """``session.start``."""
        optional = {"idle_timeout_s": idle_timeout_s, "max_lifetime_s": max_lifetime_s}
        return await self._typed(
            "session.start", session, {"user": user}, id, data=data, **optional
        )

    async def update_session(
        self,
        session: str,
        *,
        step: str | None = None,
        data: dict[str, Any] | None = None,
        remove: list[str] | None = None,
        id: str | None = None,
    ) -> Sent:
        """``session.update``: record a step, merge data, remove fields."""
        return await self._typed(
            "session.update", session, {}, id, step=step, data=data, remove=remove
        )

    async def end_session(
        self, session: str, *, reason: str | None = None, id: str | None = None
    ) -> Sent:
        """``session.end``: a ``session.closed`` notice follows on the notices topic."""
        return await self._typed("session.end", session, {}, id, reason=reason)

    # --- conversations -----------------------------------------------------------------------
    async def add_message(
        self,
        user: str,
        conversation: str,
        role: str,
        content: str,
        *,
        tokens: int | None = None,
        meta: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> Sent:
        """``conversation.message``: one turn of one of the user's conversations."""
        data = {"conversation": conversation, "role": role, "content": content}
        return await self._typed("conversation.message", user, data, id, tokens=tokens, meta=meta)

    async def forget(
        self, user: str, *, conversation: str | None = None, id: str | None = None
    ) -> Sent:
        """``conversation.forget``: one conversation, or (None) everything the user has."""
        return await self._typed("conversation.forget", user, {}, id, conversation=conversation)

    # --- resources ---------------------------------------------------------------------------
    async def register_resource(
        self,
        resource: str,
        kind: str,
        *,
        ttl_s: float | None = None,
        idle_s: float | None = None,
        size_bytes: int | None = None,
        meta: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> Sent:
        """``resource.register``: a resource with a TTL and/or an idle timeout."""
        optional = {"ttl_s": ttl_s, "idle_s": idle_s, "size_bytes": size_bytes, "meta": meta}
        return await self._typed("resource.register", resource, {"kind": kind}, id, **optional)

    async def touch_resource(self, resource: str, *, id: str | None = None) -> Sent:
        """``resource.touch``: restart the idle clock."""
        return await self._typed("resource.touch", resource, {}, id)

    async def release_resource(self, resource: str, *, id: str | None = None) -> Sent:
        """``resource.release``."""
        return await self._typed("resource.release", resource, {}, id)

    async def _typed(
        self, event_type: str, key: str, required: dict[str, Any], id: str | None, **optional: Any
    ) -> Sent:
        data = {**required, **{k: v for k, v in optional.items() if v is not None}}
        return await self.send(Event(event_type, key, data, id=id))


async def _receipt(delivery: asyncio.Future[Any], envelope: dict[str, Any], topic: str) -> Sent:
    try:
        metadata = await delivery
    except KafkaError as exc:
        raise DeliveryError(f"{envelope['type']} {envelope['id']} not acknowledged: {exc}") from exc
    return Sent(
        id=envelope["id"],
        type=envelope["type"],
        key=envelope["key"],
        topic=topic,
        partition=metadata.partition,
        offset=metadata.offset,
        envelope=envelope,
    )
