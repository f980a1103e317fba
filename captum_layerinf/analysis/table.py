"""A small table type: rows of values with column names, rendered as Markdown or HTML."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


@dataclass(frozen=True)
class Table:
    """Rows of a result table, with a title and a one-line caption.

    Attributes:
        title: What the table is ("Table 1: ...").
        columns: Column names.
        rows: One list of values (str, int or float) per row.
        caption: How to read it.
    """

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    caption: str = ""

    def __post_init__(self) -> None:
        bad = [i for i, row in enumerate(self.rows) if len(row) != len(self.columns)]
        if bad:
            raise ValueError(f"rows {bad} do not have {len(self.columns)} values.")

    def column(self, name: str) -> list[Any]:
        """The values of column `name`."""
        return [row[self.columns.index(name)] for row in self.rows]

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column name (read a row's cell by its column)."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_markdown(self, digits: int = 3) -> str:
        """The table as GitHub Markdown."""
        lines = [
            "| " + " | ".join(self.columns) + " |",
            "|" + "---|" * len(self.columns),
        ]
        lines += ["| " + " | ".join(_cell(v, digits) for v in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def to_html(self, digits: int = 3) -> str:
        """The table as an HTML `<table>` (values escaped)."""
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(v, digits))}</td>" for v in row) + "</tr>"
            for row in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def save(self, path: str | Path) -> None:
        """Writes the table as JSON."""
        Path(path).write_text(json.dumps(self.__dict__, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Table:
        """Reads a table written by `save`."""
        return cls(**json.loads(Path(path).read_text()))
