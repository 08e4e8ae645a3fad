"""Small objects that show themselves in a notebook and as text (any layer may return them)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


class Message:
    """One or more lines of text (shown as text and as HTML)."""

    def __init__(self, *lines: str):
        self.lines = [line for line in lines if line is not None]

    def __str__(self) -> str:
        return "\n".join(self.lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return "<br>".join(html.escape(line) for line in self.lines)


class Table:
    """Rows with named columns; a DataFrame on demand (``.df``)."""

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str = ""):
        self.columns = list(columns)
        self.rows = [list(r) for r in rows]
        self.title = title

    @property
    def df(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.columns)

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        cells = [self.columns] + [[("" if v is None else str(v)) for v in r] for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
                 for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if self.title:
            lines.insert(0, self.title)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r)
            + "</tr>"
            for r in self.rows
        )
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Svg:
    """An SVG image (the DAG): the picture in a notebook; the SVG text in a terminal, or
    ``note`` (e.g. where it was written) when given."""

    def __init__(self, svg: str, text: str = "", note: str = ""):
        self.svg = svg
        self.text = text
        self.note = note

    def _repr_svg_(self) -> str:
        return self.svg

    def __str__(self) -> str:
        return self.note or self.svg

    def __repr__(self) -> str:
        return self.text or "<svg>"


class Dot:
    """DOT text, shown as code."""

    def __init__(self, dot: str):
        self.dot = dot

    def __str__(self) -> str:
        return self.dot

    def __repr__(self) -> str:
        return self.dot
