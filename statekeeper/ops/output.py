"""How commands talk back: readable text (rich) by default, one JSON document with ``--json``.

Progress bars go to stderr and only when it is a terminal, so stdout stays parseable.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

T = TypeVar("T")


class Output:
    """Where a command writes its results."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False, soft_wrap=True)
        self.errors = Console(stderr=True, highlight=False)

    def json(self, value: Any) -> None:
        """One JSON document (or one line of a stream) on stdout."""
        sys.stdout.write(json.dumps(value, default=_jsonable, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def line(self, text: str) -> None:
        self.console.print(text, markup=False)

    def table(self, title: str | None, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if cell is None else str(cell) for cell in row))
        self.console.print(table)

    def fields(self, value: dict[str, Any]) -> None:
        """A map as ``name: value`` lines."""
        width = max((len(k) for k in value), default=0)
        for name, field in value.items():
            shown = field if isinstance(field, str) else json.dumps(field, default=_jsonable)
            self.line(f"{name.ljust(width)}  {shown}")

    def error(self, text: str) -> None:
        self.errors.print(f"statekeeper: {text}", markup=False)

    def progress(self, items: list[T], label: str) -> Iterator[T]:
        """Iterate ``items`` with a progress bar on stderr (when it is a terminal)."""
        with Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            console=self.errors,
            transient=True,
            disable=not self.errors.is_terminal,
        ) as bar:
            task = bar.add_task(label, total=len(items))
            for item in items:
                yield item
                bar.advance(task)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    return str(value)
