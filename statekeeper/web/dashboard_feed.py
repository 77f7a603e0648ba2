"""The live feed behind the dashboard: one status-stream reader per worker, fanned out.

One :class:`StatusFeed` per worker reads ``statekeeper.workflow.status`` with no consumer
group, from the end, and hands each record to the open dashboards of the record's tenant
only. It starts with the first dashboard (a worker nobody watches reads nothing) and stops
with the app. Each dashboard has a bounded queue: a browser that reads slower than changes
arrive loses the oldest ones (counted, so the page knows to re-read its snapshot) and can
never grow the worker's memory. The last few changes per tenant are kept, so a page that
(re)connects starts with some history instead of an empty list.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from statekeeper import codec

logger = logging.getLogger(__name__)

RECENT_PER_TENANT = 50  # changes replayed to a dashboard when it connects
MAX_TENANTS_REMEMBERED = 1024  # tenants whose recent changes are kept (least recent dropped)
READY_TIMEOUT_S = 15.0
RETRY_S = 2.0
MAX_SUBSCRIBERS = 200  # open dashboards per worker; more are refused (503)

ConsumerFactory = Callable[[], AIOKafkaConsumer]


class FeedClosed(Exception):
    """The feed stopped (the app is stopping), could not reach Kafka, or is full."""


_CLOSED = object()


class Subscription:
    """One dashboard's view of the feed: its tenant's records, in a bounded queue."""

    def __init__(self, tenant: str, maxsize: int) -> None:
        self.tenant = tenant
        self.dropped = 0  # records lost since the last call to take_dropped()
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    def offer(self, record: Any) -> None:
        """Queue ``record``; when full, the oldest queued record makes room (never blocks)."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(record)

    def close(self) -> None:
        """Wake the reader with :class:`FeedClosed`."""
        self.offer(_CLOSED)

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next record, or None after ``timeout`` seconds without one."""
        try:
            record = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if record is _CLOSED:
            raise FeedClosed("the status feed stopped")
        return record  # type: ignore[no-any-return]

    def take_dropped(self) -> int:
        """How many records were lost since the last call (and reset the count)."""
        dropped, self.dropped = self.dropped, 0
        return dropped


class StatusFeed:
    """Fans status records out to subscriptions of their tenant."""

    def __init__(self, new_consumer: ConsumerFactory, topic: str, queue_size: int) -> None:
        self.topic = topic
        self.queue_size = queue_size
        self._new_consumer = new_consumer
        self._by_tenant: dict[str, set[Subscription]] = {}
        self._recent: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopped = False

    @property
    def subscribers(self) -> int:
        return sum(len(subs) for subs in self._by_tenant.values())

    async def subscribe(self, tenant: str) -> tuple[Subscription, list[dict[str, Any]]]:
        """A new subscription and the tenant's recent records, oldest first.

        Returns once the reader sits at the end of every partition, so every record
        produced after this returns reaches the subscription. Raises :class:`FeedClosed`
        when the feed is stopping or Kafka cannot be reached in time.
        """
        if self._stopped:
            raise FeedClosed("the status feed stopped")
        if self.subscribers >= MAX_SUBSCRIBERS:
            raise FeedClosed(f"this worker already serves {MAX_SUBSCRIBERS} dashboards")
        self._start()
        try:
            await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT_S)
        except TimeoutError:
            raise FeedClosed("the status stream could not be read") from None
        subscription = Subscription(tenant, self.queue_size)
        self._by_tenant.setdefault(tenant, set()).add(subscription)
        return subscription, list(self._recent.get(tenant, ()))

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget ``subscription`` (idempotent)."""
        subs = self._by_tenant.get(subscription.tenant)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._by_tenant[subscription.tenant]

    def dispatch(self, records: Iterable[dict[str, Any]]) -> None:
        """Hand each record to its tenant's subscriptions and remember it as recent."""
        for record in records:
            tenant = record.get("tenant")
            if not isinstance(tenant, str):
                continue
            self._remember(tenant, record)
            for subscription in self._by_tenant.get(tenant, ()):
                subscription.offer(record)

    async def stop(self) -> None:
        """Stop reading and end every open stream; later subscriptions are refused."""
        self._stopped = True
        for subs in list(self._by_tenant.values()):
            for subscription in subs:
                subscription.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _remember(self, tenant: str, record: dict[str, Any]) -> None:
        recent = self._recent.get(tenant)
        if recent is None:
            recent = self._recent[tenant] = deque(maxlen=RECENT_PER_TENANT)
            if len(self._recent) > MAX_TENANTS_REMEMBERED:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(tenant)
        recent.append(record)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        """Read forever; after a Kafka error, reconnect (from the end) after a pause."""
        while True:
            try:
                await self._read()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                logger.warning("status feed: %s; reconnecting in %ss", exc, RETRY_S)
            except Exception:
                logger.exception("status feed failed; restarting in %ss", RETRY_S)
            self._ready.clear()
            await asyncio.sleep(RETRY_S)

    async def _read(self) -> None:
        consumer = self._new_consumer()
        await consumer.start()
        try:
            await self._seek_to_end(consumer)
            self._ready.set()
            logger.info("status feed reading %s from the end", self.topic)
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    self.dispatch(_decoded(r.value for r in records))
        finally:
            await consumer.stop()

    async def _seek_to_end(self, consumer: AIOKafkaConsumer) -> None:
        """Take every partition of the topic (no group: all of them) and find its end."""
        consumer.subscribe([self.topic])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while not consumer.assignment():
            if loop.time() > deadline:
                raise KafkaError(f"no partitions of {self.topic} were assigned")
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():  # resolve the end offsets now, not at the first fetch
            await consumer.position(tp)


def _decoded(values: Iterable[bytes | None]) -> Iterable[dict[str, Any]]:
    for value in values:
        if value is None:
            continue
        try:
            record = codec.unpack(value)
        except codec.DecodeError:
            logger.warning("status feed: an undecodable status record was skipped")
            continue
        if isinstance(record, dict):
            yield record
