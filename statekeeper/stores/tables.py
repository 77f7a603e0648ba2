"""The faust tables (RocksDB-backed, with changelog topics), declared on the one app.

Keys and values are raw bytes: keys are the contract's record keys ``{tenant}/{entity}``,
so a table partition is exactly its input topic's partition and web routing hashes the
same bytes the producer did. Values are msgpack (see the models in this package).
"""

from __future__ import annotations

from faust.types import TableT

from statekeeper.app import app


def _bytes_table(name: str, help_text: str) -> TableT:
    return app.Table(
        name,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=app.settings.partitions,
        options=app.rocksdb_options(),
        help=help_text,
    )


workflow_items = _bytes_table("workflow-items", "current state of every workflow item")
