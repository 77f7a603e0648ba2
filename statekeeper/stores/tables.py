"""The faust tables (RocksDB-backed, with changelog topics), declared on the one app.

Keys and values are raw bytes. Every table is written only while processing an event of
``statekeeper.workflow.events``, so each change lands in the partition of the item it is
about: a table partition is exactly its input topic's partition, web routing hashes the
same bytes the producer did, and per-partition scans (:mod:`statekeeper.stores.scan`) see
one partition's items, history, counts and deadlines together.

| table | key | value |
|---|---|---|
| ``workflow-items`` | ``{tenant}/{item}`` | :class:`~statekeeper.stores.workflow.Item` |
| ``workflow-history`` | ``{tenant}/{item}`` NUL version (8 bytes) | one applied change |
| ``workflow-counts`` | ``{tenant}`` NUL ``{workflow}`` | this partition's counts |
| ``workflow-deadlines`` | SLA deadline (8 bytes) ``{tenant}/{item}`` | state and version |
| ``workflow-retention`` | purge deadline (8 bytes) ``{tenant}/{item}`` | item version |

Lifecycle tables are fed by ``statekeeper.lifecycle.events`` the same way:

| table | key | value |
|---|---|---|
| ``lifecycle-resources`` | ``{tenant}/{resource}`` | ``lifecycle.Resource`` |
| ``lifecycle-ended`` | ``{tenant}/{resource}`` | ``lifecycle.Ended`` receipt |
| ``lifecycle-deadlines`` | deadline (8 bytes) ``{tenant}/{resource}`` | expire (reason) or forget |
| ``lifecycle-stats`` | ``{tenant}`` NUL ``{kind}`` | ``lifecycle.Stats`` |

Versions before the batched path also journaled clock ticks in the deadline indexes, under
keys after every deadline (``deadlines.LEGACY_JOURNAL``): never due, skipped by listings.
"""

from __future__ import annotations

from faust.types import TableT

from statekeeper.app import app
from statekeeper.stores.staged import StagedTable


def bytes_table(name: str, help_text: str) -> TableT:
    """A RocksDB table of raw bytes, co-partitioned with the input topics, bounded memory."""
    return app.Table(
        name,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=app.settings.partitions,
        options=app.rocksdb_options(),
        help=help_text,
    )


workflow_items = bytes_table("workflow-items", "current state of every workflow item")
workflow_history = bytes_table("workflow-history", "every applied change, per item")
workflow_counts = bytes_table("workflow-counts", "items by state and condition, per partition")
workflow_deadlines = bytes_table("workflow-deadlines", "SLA deadlines of items in a state")
workflow_retention = bytes_table("workflow-retention", "purge deadlines of finished items")

lifecycle_resources = bytes_table("lifecycle-resources", "live resources with expiry policies")
lifecycle_ended = bytes_table("lifecycle-ended", "receipts of ended resources (dedupe, replay)")
lifecycle_deadlines = bytes_table("lifecycle-deadlines", "resource expiry and receipt deadlines")
lifecycle_stats = bytes_table("lifecycle-stats", "resources by tenant and kind, per partition")

# The workflow pattern writes through staged views (batched path, stores/staged.py).
staged_items = StagedTable(workflow_items)
staged_history = StagedTable(workflow_history)
staged_counts = StagedTable(workflow_counts)
staged_deadlines = StagedTable(workflow_deadlines)
staged_retention = StagedTable(workflow_retention)
