"""The one output path: JSON with --json, a table on a terminal, plain text when piped."""

import json
import sys
from collections.abc import Sequence
from typing import Any

import typer

from cpms_admin.cli.context import AppContext

Columns = Sequence[tuple[str, str]]  # (key in the row, column title)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


def error(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)


def warn(message: str) -> None:
    typer.echo(f"Warning: {message}", err=True)


def emit_object(app: AppContext, data: Any, lines: Sequence[str]) -> None:
    """One result: the JSON document, or the human lines."""
    if app.json_output:
        print_json(data)
        return
    for line in lines:
        typer.echo(line)


def emit_rows(
    app: AppContext, rows: list[dict[str, Any]], columns: Columns, *, title: str | None = None
) -> None:
    """A listing: a JSON list, a table on a terminal, tab-separated lines when piped."""
    if app.json_output:
        print_json(rows)
        return
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_lines=False, header_style="bold")
        for _, heading in columns:
            table.add_column(heading, overflow="fold")
        for line in cells:
            table.add_row(*line)
        Console().print(table)
        if not rows:
            typer.echo("(none)")
        return
    typer.echo("\t".join(heading for _, heading in columns))
    for line in cells:
        typer.echo("\t".join(cell.replace("\t", " ") for cell in line))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
