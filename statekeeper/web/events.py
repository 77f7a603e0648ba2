"""``POST /v1/events``: JSON envelopes validated and produced to the right topic and key.

For services that speak HTTP rather than Kafka. The body is one envelope or a list; every
envelope is validated exactly as the worker would (the same :func:`validate_envelope`) before
any is produced, so a request is all or nothing. ``id``, ``ts``, ``v`` and ``tenant`` may be
left out (a UUID, the current time, 1 and the API key's tenant are filled in); a ``tenant``
other than the key's own is refused. The answer is ``202`` once the broker has acknowledged
every record, with the ids in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from aiohttp.web_exceptions import HTTPRequestEntityTooLarge
from aiokafka.errors import KafkaError
from faust.web import Request, Response, View

from statekeeper import codec
from statekeeper.agents.pipeline import topic_of_type
from statekeeper.app import app
from statekeeper.topics.envelope import Envelope, validate_envelope
from statekeeper.topics.rejections import Rejected
from statekeeper.web.api import RETRY_AFTER_S, ApiError, api_view, require_writer, tenant_of

logger = logging.getLogger(__name__)

MAX_EVENTS_PER_REQUEST = 1000


@app.page("/v1/events")
class EventsView(View):
    """Produce events for the caller's tenant."""

    @api_view
    async def post(self, request: Request) -> Response:
        tenant = tenant_of(request)
        require_writer(request)
        bodies = _as_list(await _read_json(request))
        envelopes = [_validated(tenant, body, index) for index, body in enumerate(bodies)]
        records = [(e, _packed(e, index)) for index, e in enumerate(envelopes)]
        await _produce(records)
        ids = [e.id for e in envelopes]
        return self.json({"accepted": len(ids), "ids": ids}, status=202)


async def _read_json(request: Request) -> Any:
    limit = app.settings.max_body_bytes
    declared = request.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the body exceeds {limit} bytes")
    try:
        raw = await request.read()
    except HTTPRequestEntityTooLarge:
        raise ApiError(413, "too_large", f"the body exceeds {limit} bytes") from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"the body is not JSON: {exc}"[:300]) from None


def _as_list(body: Any) -> list[Any]:
    bodies = body if isinstance(body, list) else [body]
    if not bodies:
        raise ApiError(400, "bad_request", "send one envelope or a non-empty list of them")
    if len(bodies) > MAX_EVENTS_PER_REQUEST:
        raise ApiError(400, "bad_request", f"at most {MAX_EVENTS_PER_REQUEST} events a request")
    return bodies


def _validated(tenant: str, body: Any, index: int) -> Envelope:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_envelope", f"event {index}: an envelope is a JSON object")
    claimed = body.get("tenant", tenant)
    if claimed != tenant:
        raise ApiError(403, "forbidden", f"event {index}: tenant {claimed!r} is not your tenant")
    filled = {
        "v": 1,
        "id": uuid.uuid4().hex,
        "ts": int(time.time() * 1000),
        "data": {},
        **body,
        "tenant": tenant,
    }
    try:
        return validate_envelope(filled, types=frozenset(topic_of_type))
    except Rejected as rejection:
        raise ApiError(400, str(rejection.reason), f"event {index}: {rejection.detail}") from None


def _packed(envelope: Envelope, index: int) -> bytes:
    packed = codec.pack(envelope.as_dict())
    limit = app.settings.max_event_bytes
    if len(packed) > limit:
        raise ApiError(413, "too_large", f"event {index} is {len(packed)} bytes, limit {limit}")
    return packed


async def _produce(records: list[tuple[Envelope, bytes]]) -> None:
    """Send every record, then wait until the broker acknowledged them all."""
    try:
        pending = [
            await app.topic(topic_of_type[e.type]).send(key=e.record_key, value=packed)
            for e, packed in records
        ]
        await asyncio.gather(*pending)
    except KafkaError as exc:
        logger.warning("producing %d events failed: %s", len(records), exc)
        raise ApiError(
            503,
            "unavailable",
            "Kafka did not accept the events; retry with the same ids",
            {"Retry-After": str(RETRY_AFTER_S)},
        ) from None
