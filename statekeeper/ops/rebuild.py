"""``statekeeper rebuild``: drop this worker's local copy of tables so faust restores them.

Every table is a RocksDB database per partition under ``<data dir>/v1/tables/`` (faust's
layout: ``<table>-<partition>.db`` and ``<table>-backups``), next to its changelog topic in
Kafka, which holds the truth. Deleting the local files makes the worker, on its next start,
read the table's changelog from the beginning for every partition it is assigned (the stored
changelog offset lives in the deleted files too). Nothing in Kafka is touched.

The worker must be stopped first: a running worker holds each database's ``LOCK`` file, and
the command refuses while any lock of the data dir is held.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import re
import shutil
from pathlib import Path
from typing import Any

from statekeeper.exceptions import ConfigError
from statekeeper.ops import common

_PART = re.compile(r"^(?P<table>.+?)-(?:(?P<partition>\d+)\.db|backups)$")


def tables_dir(data_dir: Path) -> Path:
    """Where faust keeps this worker's table files (app version 1)."""
    return data_dir / "v1" / "tables"


def table_files(data_dir: Path) -> dict[str, list[Path]]:
    """Table name -> its local files and directories."""
    found: dict[str, list[Path]] = {}
    root = tables_dir(data_dir)
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        match = _PART.match(path.name)
        if match:
            found.setdefault(match["table"], []).append(path)
    return found


def locked_by_a_worker(paths: list[Path]) -> Path | None:
    """The first RocksDB ``LOCK`` among ``paths`` that a running process holds, if any."""
    for path in paths:
        lock = path / "LOCK"
        if not lock.is_file():
            continue
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return lock
            raise
        finally:
            os.close(fd)
    return None


def register(commands: Any) -> None:
    rebuild = commands.add_parser(
        "rebuild", help="stop the worker first: delete its local table files to restore them"
    )
    rebuild.add_argument("tables", nargs="*", help="table names (see --list), or 'all'")
    rebuild.add_argument("--data-dir", type=Path, help="the worker's STATEKEEPER_DATA_DIR")
    rebuild.add_argument("--list", action="store_true", help="list the tables found")
    rebuild.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    common.add_json_arg(rebuild)
    rebuild.set_defaults(func=rebuild_command)


def rebuild_command(args: argparse.Namespace) -> int:
    """Delete the chosen tables' local files (refusing while a worker has them open)."""
    out = common.output(args)
    data_dir = args.data_dir or common.settings().worker_data_dir
    found = table_files(data_dir)
    if args.list or not args.tables:
        out.json(sorted(found)) if out.as_json else out.table(
            f"tables in {tables_dir(data_dir)}",
            ["table", "files"],
            sorted((name, len(paths)) for name, paths in found.items()),
        )
        return 0
    chosen = sorted(found) if args.tables == ["all"] else args.tables
    unknown = [name for name in chosen if name not in found]
    if unknown:
        raise ConfigError(f"no local files for table(s) {unknown} in {tables_dir(data_dir)}")
    paths = [path for name in chosen for path in found[name]]
    held = locked_by_a_worker(paths)
    if held is not None:
        raise ConfigError(f"a running worker holds {held}: stop it first, then rebuild")
    if not args.dry_run:
        for path in out.progress(paths, "delete"):
            shutil.rmtree(path)
    if out.as_json:
        out.json({"dry_run": args.dry_run, "tables": chosen, "deleted": [str(p) for p in paths]})
    else:
        verb = "would delete" if args.dry_run else "deleted"
        for path in paths:
            out.line(f"{verb} {path}")
        out.line(f"{', '.join(chosen)}: restored from the changelog at the next worker start")
    return 0
