"""How the command line shows results: rich tables for people, JSON and CSV for programs.

Every read command takes ``--format table|json|csv``. JSON keeps the listing keys (sizes as
integer bytes, speeds as bits per second, prices as strings); CSV flattens to one row per item.
The ``metering`` and ``billing`` command lines render through these functions too.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table

#: Normal output (tables, JSON, CSV) goes to stdout; progress and errors go to stderr.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def emit(
    records: Sequence[Mapping[str, Any]],
    fmt: OutputFormat | str,
    *,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    json_records: Sequence[Any] | None = None,
) -> None:
    """Print ``records`` in ``fmt``. ``json_records`` (nested values) replaces ``records`` for
    JSON when given, so JSON can keep structure the flat table and CSV cannot."""
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.json:
        sys.stdout.write(
            json.dumps(
                list(json_records if json_records is not None else records), indent=2, default=str
            )
        )
        sys.stdout.write("\n")
        return
    cols = list(columns or (records[0].keys() if records else []))
    if fmt is OutputFormat.csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow({c: _cell(r.get(c)) for c in cols})
        sys.stdout.write(buf.getvalue())
        return
    table = Table(title=title, show_lines=False)
    for c in cols:
        table.add_column(c)
    for r in records:
        table.add_row(*(_cell(r.get(c)) for c in cols))
    out.print(table)


def emit_one(
    record: Mapping[str, Any], fmt: OutputFormat | str, *, title: str | None = None
) -> None:
    """Print one object: a two-column table, a JSON object, or a one-row CSV."""
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(record, indent=2, default=str) + "\n")
    elif fmt is OutputFormat.csv:
        emit([record], fmt)
    else:
        table = Table(title=title, show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        for k, v in record.items():
            table.add_row(k, _cell(v))
        out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


__all__ = ["OutputFormat", "emit", "emit_one", "err", "out"]
