"""Small objects that show themselves in a notebook and as text."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
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
    """An SVG image (the DAG)."""

    def __init__(self, svg: str, text: str = ""):
        self.svg = svg
        self.text = text

    def _repr_svg_(self) -> str:
        return self.svg

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


def _when(epoch: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch).isoformat(" ", "seconds")


def flows_table(summaries: Sequence[Any]) -> Table:
    """The flows of a store (``Workspace.flows()``)."""
    rows = [[s.name, s.version, s.nodes, s.change, _when(s.updated_at)] for s in summaries]
    return Table(["flow", "version", "nodes", "last change", "updated"], rows)


def history_table(history: Sequence[dict[str, Any]]) -> Table:
    """The versions of one flow (``Workspace.history(name)``)."""
    rows = [[h["version"], h["change"], h["nodes"], _when(h["created_at"])] for h in history]
    return Table(["version", "change", "nodes", "created"], rows)


def nodes_table(flow: Any, paths: Mapping[str, str] | None = None) -> Table:
    """The nodes of a flow: kind, what they read, triggers, parameters, identity, and where
    a resource's data lives (``paths``: node → path, e.g. a local topic's directory)."""
    from ultron_nb.flow.identity import identities

    ids = identities(flow) if len(flow) else {}
    paths = paths or {}
    rows = [
        [n.name, n.label, ", ".join(n.data_inputs()),
         "; ".join(e.label + (f" {e.source}" if e.source else "") for e in n.triggers),
         ", ".join(f"{k}={v}" for k, v in n.params), ids.get(n.name, "")[:12],
         paths.get(n.name, "")]
        for n in flow
    ]
    return Table(["node", "kind", "reads", "triggers", "params", "identity", "path"], rows,
                 title=f"flow {flow.name} version {flow.version}")
