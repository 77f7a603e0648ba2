"""Python client of statekeeper: produce events, follow the output topics, query over HTTP.

::

    from statekeeper.client import Producer, AsyncQueryClient, status_changes

    async with Producer("acme", bootstrap_servers="127.0.0.1:9092") as producer:
        sent = await producer.start_item("inv-1", "invoice")      # acked; sent.id for retries
    async with AsyncQueryClient("http://127.0.0.1:6066", api_key) as api:
        item = await api.item("inv-1")
    async with status_changes(workflow="invoice", group_id="billing") as changes:
        async for change in changes:
            ...

Nothing here imports faust: the client is safe to use in any asyncio program.
"""

from statekeeper.client.consumer import (
    Received,
    StreamReader,
    dead_letters,
    lifecycle_notices,
    status_changes,
)
from statekeeper.client.exceptions import (
    ApiError,
    BadRequest,
    ClientError,
    DeliveryError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
)
from statekeeper.client.http import AsyncQueryClient, QueryClient, wait_until
from statekeeper.client.producer import Event, Producer, Sent

__all__ = [
    "ApiError",
    "AsyncQueryClient",
    "BadRequest",
    "ClientError",
    "DeliveryError",
    "Event",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "Producer",
    "QueryClient",
    "Received",
    "Sent",
    "StreamReader",
    "Unauthorized",
    "Unavailable",
    "dead_letters",
    "lifecycle_notices",
    "status_changes",
    "wait_until",
]
