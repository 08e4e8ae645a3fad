"""What :func:`ultron_nb.experiments.status` returns: an experiment and its nodes, now.

The objects show themselves (text, HTML with state colours, a DataFrame).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ultron_nb.errors import NotFoundError
from ultron_nb.flow.plan import target_key
from ultron_nb.flow.render import STATUS_COLORS

if TYPE_CHECKING:
    import pandas as pd


def mask_url(url: str) -> str:
    """``url`` without the password of its user part (``http://u:***@host``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.password is not None else f"{parts.username}@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


@dataclass
class NodeStatus:
    """One node of an experiment as it is now."""

    node: str
    kind: str
    state: str
    instance: str | None = None
    job_id: str | None = None
    web_url: str | None = None
    watermark_ms: int | None = None
    error: str | None = None
    shared_from: str | None = None
    savepoint: str | None = None
    output: str | None = None
    attempt: int | None = None

    @property
    def watermark(self) -> datetime | None:
        """The watermark as a naive UTC datetime (None when there is none yet)."""
        if self.watermark_ms is None:
            return None
        return datetime(1970, 1, 1) + timedelta(milliseconds=self.watermark_ms)

    @property
    def watermark_text(self) -> str:
        wm = self.watermark
        return wm.strftime("%Y-%m-%d %H:%M:%S") if wm else ""


@dataclass(repr=False)
class ExperimentStatus:
    """An experiment and the live state of its nodes."""

    name: str
    flow: str
    flow_version: int
    label: str
    target: str
    state: str
    params: dict[str, Any] = field(default_factory=dict)
    nodes: list[NodeStatus] = field(default_factory=list)
    message: str = ""

    def __getitem__(self, node: str) -> NodeStatus:
        for item in self.nodes:
            if item.node == node:
                return item
        raise NotFoundError(f"experiment {self.name!r} has no node {node!r}")

    @property
    def cluster(self) -> str:
        """The target without credentials (shown everywhere instead of the URL)."""
        return mask_url(self.target)

    @property
    def cluster_key(self) -> str:
        return target_key(self.target)

    def node_states(self) -> dict[str, str]:
        """Node → state, for :func:`ultron_nb.flow.render.to_dot` (``status=``)."""
        return {n.node: n.state for n in self.nodes}

    def watermark_texts(self) -> dict[str, str]:
        """Stream node → watermark text, for ``to_dot(watermarks=...)``."""
        return {n.node: n.watermark_text for n in self.nodes if n.watermark_ms is not None}

    def shared_nodes(self) -> set[str]:
        return {n.node for n in self.nodes if n.shared_from}

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([{
            "node": n.node, "kind": n.kind, "state": n.state, "instance": n.instance,
            "job": n.job_id, "watermark": n.watermark, "error": n.error,
            "shared_from": n.shared_from, "savepoint": n.savepoint, "web": n.web_url,
        } for n in self.nodes])

    def __str__(self) -> str:
        lines = [f"experiment {self.name} ({self.flow} v{self.flow_version}) on {self.cluster}: "
                 f"{self.state}" + (f" — {self.message}" if self.message else "")]
        for n in self.nodes:
            extra = []
            if n.job_id:
                extra.append(f"job {n.job_id}")
            if n.watermark_ms is not None:
                extra.append(f"watermark {n.watermark_text}")
            if n.shared_from:
                extra.append(f"shared from {n.shared_from}")
            if n.error:
                extra.append(f"error: {n.error}")
            lines.append(f"  {n.node:<20} {n.kind:<14} {n.state:<10} {'  '.join(extra)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        rows = []
        for n in self.nodes:
            colour = STATUS_COLORS.get(n.state, "#ffffff")
            job = (f'<a href="{html.escape(n.web_url)}" target="_blank">'
                   f"{html.escape(n.job_id or '')}</a>") if n.web_url else ""
            rows.append(
                f"<tr><td>{html.escape(n.node)}</td><td>{html.escape(n.kind)}</td>"
                f'<td style="background:{colour}">{html.escape(n.state)}</td><td>{job}</td>'
                f"<td>{html.escape(n.watermark_text)}</td>"
                f"<td>{html.escape(n.shared_from or '')}</td>"
                f"<td>{html.escape(n.error or '')}</td></tr>"
            )
        head = ("<tr><th>node</th><th>kind</th><th>state</th><th>Flink job</th>"
                "<th>watermark</th><th>shared from</th><th>error</th></tr>")
        caption = (f"experiment <b>{html.escape(self.name)}</b> — {html.escape(self.flow)} "
                   f"v{self.flow_version} on {html.escape(self.cluster)}: "
                   f"<b>{html.escape(self.state)}</b>")
        if self.message:
            caption += f" — {html.escape(self.message)}"
        return f"<table><caption>{caption}</caption>{head}{''.join(rows)}</table>"
