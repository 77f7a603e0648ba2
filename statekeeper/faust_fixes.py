"""A correction to faust-streaming 0.15.3 that stops it from skipping input records.

At the end of table recovery, ``Recovery.on_recovery_completed`` (as installed) resumes the
stream partitions, *then* seeks them to their committed offsets, *then* resumes
``app.flow_control``, which empties every stream queue. The consumer is already fetching
(recovery resumed it to read the changelogs), so records fetched between the first and
the last step are put on the agents' queues and then thrown away, while the fetch position
has moved past them. faust then sees the next record far above its read offset, books the
skipped offsets as a gap (acknowledged), and the next commit moves past records no agent
ever handled. Found by the SIGKILL system tests: after a restart, a few records right
after the committed offset were never applied (README "Reliability").

The correction keeps the stream partitions paused until the queues have been emptied:
the method runs unchanged, except that its ``consumer.resume_partitions`` call is held back
until just after ``flow_control.resume()``. Seek, clear, then fetch — the order the rest of
faust uses.

Beside the correction, four speed-ups:

- before faust reads the start offsets of its active changelog partitions, those far behind
  are restored in bulk (:mod:`statekeeper.stores.restore`), so a rebuilt data dir does not
  wait for faust's record-by-record recovery;
- the table manager does not sleep a second before it subscribes (faust waits there for
  tables still being declared; ours are all declared before the app starts);
- a RocksDB store flushes its databases' memtables when it stops. faust only drops them
  (the ``close()`` is commented out), and RocksDB does not flush on close while its
  write-ahead log is on, so every start replayed up to two write buffers of log per table
  partition: seconds with a million items;
- a table hashes by identity in C. faust's ``Collection.__hash__`` returns
  ``object.__hash__(self)`` from a Python method, and the batched path keys its staged
  writes by table: several Python calls per event, for the same value.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables.base import Collection
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from statekeeper.stores import restore

logger = logging.getLogger(__name__)

_installed_on_recovery_completed = Recovery.on_recovery_completed
_installed_build_offsets = Recovery._build_offsets
_installed_store_stop = RocksDBStore.stop
_installed_tables_on_start = TableManager.on_start


async def _on_recovery_completed(self: Recovery, generation_id: int = 0) -> None:
    """``Recovery.on_recovery_completed`` with stream partitions resumed after the clear."""
    consumer: Any = self.app.consumer
    flow: Any = self.app.flow_control
    held: list[set[TP]] = []
    resume_partitions = consumer.resume_partitions
    resume_flow = flow.resume

    def hold(tps: Any) -> None:
        held.append(set(tps))

    def resume_then_release() -> None:
        resume_flow()  # empties the stream queues: nothing fetched after the seek is there
        while held:
            resume_partitions(held.pop(0))

    streams = {tp for tp in consumer.assignment() if not self._is_changelog_tp(tp)}
    consumer.pause_partitions(streams)
    consumer.resume_partitions = hold
    flow.resume = resume_then_release
    try:
        await _installed_on_recovery_completed(self, generation_id)
    finally:
        del consumer.resume_partitions
        del flow.resume
        while held:  # the method returned before resuming (another rebalance began)
            resume_partitions(held.pop(0))


async def _build_offsets(
    self: Recovery, consumer: Any, tps: set[TP], destination: Any, title: str
) -> None:
    """``Recovery._build_offsets``, after a bulk restore of the active partitions behind."""
    settings = getattr(self.app, "settings", None)
    if title == "active" and tps and settings is not None:
        budget = self.app.conf.broker_request_timeout * restore.BUDGET_SHARE
        try:
            await restore.restore(settings, self, set(tps), destination, budget)
        except Exception:  # faust's own recovery reads whatever is left
            logger.warning("bulk restore failed; faust's recovery reads the rest", exc_info=True)
    await _installed_build_offsets(self, consumer, tps, destination, title)


async def _store_stop(self: RocksDBStore) -> None:
    """``Store.stop``, after flushing every open partition's memtables to disk."""
    for partition, db in list(self._dbs.items()):
        try:
            db.flush(True)
        except Exception as exc:  # a full disk, say: the log is still there to replay
            logger.warning("%s[%d]: flush on stop failed: %s", self.table_name, partition, exc)
    await _installed_store_stop(self)


async def _no_wait(*args: Any, **kwargs: Any) -> None:
    return None


async def _tables_on_start(self: TableManager) -> None:
    """``TableManager.on_start`` without its fixed one-second sleep."""
    self.sleep = _no_wait  # type: ignore[method-assign]
    try:
        await _installed_tables_on_start(self)
    finally:
        del self.sleep


def install() -> None:
    """Patch faust once per process (idempotent)."""
    if Recovery.on_recovery_completed is not _on_recovery_completed:
        Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]
        logger.debug("faust Recovery.on_recovery_completed: stream partitions resumed last")
    if Recovery._build_offsets is not _build_offsets:
        Recovery._build_offsets = _build_offsets  # type: ignore[method-assign]
    if RocksDBStore.stop is not _store_stop:
        RocksDBStore.stop = _store_stop  # type: ignore[method-assign]
    if TableManager.on_start is not _tables_on_start:
        TableManager.on_start = _tables_on_start  # type: ignore[method-assign]
    if Collection.__hash__ is not object.__hash__:
        Collection.__hash__ = object.__hash__  # type: ignore[assignment,method-assign]
