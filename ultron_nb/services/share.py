"""Share an experiment as a notebook a colleague can run, and read such a notebook back.

:func:`export_notebook` writes, with nbformat: the flow's node cells exactly as defined in
the flow version the experiment ran (one ``%%ultron node`` cell per node, its flags rebuilt
so that re-running it gives the same content identity), the parameters, the run cell, the
clone and diff commands of its lineage (``experiments.parent``), and a summary of its results
(state, node states, last watermarks, row counts, the latest rows of its last nodes).

Nothing of the author's machine goes in: no cluster URL (a remote target becomes a settings
cell to fill in), no store URL, no token, no absolute path under the author's home or ultron
home, no host name of the author's settings. Every cell is scrubbed of those strings and of
any ``user:password@`` in a URL; a node cell that held one is reported (re-running it then
gives another identity), and so is everything scrubbed.

The notebook's metadata (``metadata.ultron``) records the experiment, the flow and every
node's identity, so :func:`read_export` (``%ultron import``) can check what it recreated.
"""

from __future__ import annotations

import html
import itertools
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ultron_nb import experiments
from ultron_nb.errors import ConfigError, FlowError, NotFoundError, UltronError
from ultron_nb.flow import Flow, Kind, ResourceType
from ultron_nb.flow.cells import escape_line, node_cell, rule_cell
from ultron_nb.flow.identity import identities
from ultron_nb.store import experiments as repo
from ultron_nb.version import __version__

if TYPE_CHECKING:
    from ultron_nb.workspace import Workspace

FORMAT = 1
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@'\"]+):[^\s@/'\"]+@")
_SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|AUTH|HEADERS",
                         re.IGNORECASE)
_SECRET_OPTION = re.compile(r"password|secret|token|sasl\.jaas|credential|api\.?key",
                            re.IGNORECASE)


# ---------------------------------------------------------------- secrets
@dataclass
class Scrubber:
    """The strings of the author's machine that must not leave it, and what replaces them."""

    #: (secret, placeholder), longest first. A placeholder holds no space, quote or
    #: backslash, so that a shell-quoted magic line stays one word where the secret was.
    replacements: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def for_workspace(cls, ws: Workspace, *targets: str) -> Scrubber:
        s = ws.settings
        pairs: list[tuple[str, str]] = []

        def url(text: str, what: str) -> None:
            parts = urlsplit(text)
            if parts.password:
                pairs.append((parts.password, "***"))
            if parts.username and parts.password:
                pairs.append((f"{parts.username}:***@", "***@"))
            host = parts.hostname or ""
            if host not in _LOOPBACK and not host.startswith("/"):
                pairs.append((host, f"<{what}-host>"))
            for value in dict(_query_pairs(parts.query)).values():
                if value.startswith("/"):  # a socket directory: a path of this machine
                    pairs.append((value, f"<{what}-socket>"))

        for text, what in ((s.flink_url, "flink"), (s.db_url, "database"),
                           *((t, "flink") for t in targets)):
            if text and "://" in text:
                url(text, what)
        for value in s.flink_headers.values():
            pairs += [(v, "***") for v in value.split() if len(v) >= 6]
        for name, value in os.environ.items():
            if _SECRET_ENV.search(name) and len(value) >= 6:
                pairs.append((value, "***"))
        pairs.append((str(s.home), "<ultron-home>"))
        home = str(Path.home())
        if len(home) > 1:
            pairs.append((home, "~"))
        ordered = sorted({p for p in pairs if p[0]}, key=lambda p: -len(p[0]))
        return cls(ordered)

    def add(self, pairs: Any) -> None:
        """More strings to replace (kept longest first)."""
        merged = set(self.replacements) | {p for p in pairs if p[0]}
        self.replacements = sorted(merged, key=lambda p: -len(p[0]))

    def scrub(self, text: str) -> tuple[str, list[str]]:
        """``text`` without the secrets; and what was replaced (by its placeholder)."""
        found: list[str] = []
        text, n = _URL_PASSWORD.subn(r"\1:***@", text)
        if n:
            found.append("a password in a URL")
        for secret, placeholder in self.replacements:
            if secret in text:
                text = text.replace(secret, placeholder)
                found.append(placeholder)
        return text, found


def _query_pairs(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query)


# ---------------------------------------------------------------- the export
@dataclass
class ExportResult:
    """What :func:`export_notebook` wrote."""

    path: Path
    experiment: str
    flow: str
    nodes: int
    lineage: list[str]
    scrubbed: list[str]  # what was replaced, per cell ("cell N: placeholder")
    changed_nodes: list[str]  # node cells that held a secret: their identity will differ

    def __str__(self) -> str:
        lines = [f"wrote {self.path}: experiment {self.experiment} (flow {self.flow}, "
                 f"{self.nodes} nodes" + (f", lineage {' → '.join(self.lineage)}"
                                         if len(self.lineage) > 1 else "") + ")"]
        if self.changed_nodes:
            lines.append("these node cells held paths or secrets of this machine, replaced: "
                         f"{', '.join(self.changed_nodes)} (fill them in; their identity will "
                         "differ)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def lineage(ws: Workspace, name: str) -> list[repo.ExperimentRow]:
    """``name`` and its parents, oldest first (clones record their parent)."""
    chain: list[repo.ExperimentRow] = []
    seen: set[str] = set()
    current: str | None = name
    with ws.db.read() as conn:
        while current and current not in seen:
            seen.add(current)
            try:
                row = repo.get_experiment(conn, current)
            except NotFoundError:
                break  # a parent deleted since: the chain starts here
            chain.append(row)
            current = row.parent
    return list(reversed(chain))


def definition_order(flow: Flow) -> list[str]:
    """Nodes in an order in which defining them one by one is valid (whatever they read,
    start after or stop after comes first)."""
    try:
        return flow.topological(stop_after=True)
    except FlowError:  # stop-after edges that close a cycle: the run order still holds
        return flow.topological()


def _param_words(params: Mapping[str, Any], flag: str) -> list[str]:
    return [w for k, v in sorted(params.items()) for w in (flag, f"{k}={v}")]


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return html.escape(text).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _results(ws: Workspace, exp: repo.ExperimentRow, flow: Flow) -> str:
    """The markdown summary of the experiment's results, as they are now."""
    from ultron_nb.engines.outputs import count_rows

    try:
        st = experiments.status(ws, exp.name)
        state, note = st.state, ""
        nodes = [(n.node, n.kind, n.state, n.watermark_text) for n in st.nodes]
    except UltronError:
        state, note = exp.state, " (recorded: the cluster did not answer)"
        with ws.db.read() as conn:
            nodes = [(v.member.node_name, flow[v.member.node_name].label, v.instance.state, "")
                     for v in repo.node_views(conn, exp.id) if v.member.node_name in flow]
    with ws.db.read() as conn:
        views = {v.member.node_name: v for v in repo.node_views(conn, exp.id)}
    rows = []
    for node, kind, node_state, watermark in nodes:
        view = views.get(node)
        count: Any = ""
        if view is not None and flow[node].kind is not Kind.RESOURCE:
            try:
                count = count_rows(view.instance.output)
            except UltronError:
                count = ""
        shared = view.member.shared_from if view is not None else None
        rows.append([node, kind, node_state, watermark, count,
                     f"shared from {shared}" if shared else ""])
    parts = [f"## Results at export ({time.strftime('%Y-%m-%d %H:%M')})",
             f"Experiment **{exp.name}** was **{state}**{note}.",
             _markdown_table(["node", "kind", "state", "watermark", "rows", ""], rows)]
    consumed = {ref for n in flow for ref in n.data_inputs()} | {
        e.source for n in flow for e in n.triggers if e.source}
    for name in [n.name for n in flow if n.name not in consumed and n.kind is not Kind.RESOURCE]:
        try:
            frame = experiments.preview(ws, name, experiment=exp.name, limit=5)
        except UltronError:
            continue
        parts.append(f"Latest rows of **{name}**:")
        parts.append(_markdown_table([str(c) for c in frame.columns],
                                     frame.astype(object).values.tolist()))
    return "\n\n".join(parts)


def _data_cell(flow: Flow) -> str:
    lines = ["## Data", "", "The flow reads these resources; their data is not in this "
             "notebook. Put it where the flow expects it (under the ultron home, e.g. "
             "`.ultron/topics/NAME`, or the `--path` of the node) before the run cell, for "
             "instance with `%ultron gen clicklog ...` for the click-log topics.", ""]
    for node in flow:
        if node.kind is Kind.RESOURCE:
            where = node.option_dict.get("path") or (
                f"topics/{node.name}" if node.resource_type in (ResourceType.TOPIC,)
                else f"datasets/{node.name}" if node.resource_type is not ResourceType.KAFKA
                else f"Kafka topic {node.option_dict.get('topic', '')}")
            lines.append(f"* `{node.name}` ({node.resource_type}): {where}")
    return "\n".join(lines)


def _run_cells(chain: Sequence[repo.ExperimentRow]) -> list[str]:
    root, cells = chain[0], []
    words = ["--name", root.name, *_param_words(root.params, "--param")]
    if root.label and root.label != root.name:
        words += ["--label", root.label]
    cells.append(f"%ultron run {escape_line(words)}")
    for parent, child in itertools.pairwise(chain):
        changed = {k: v for k, v in child.params.items()
                   if str(parent.params.get(k)) != str(v)}
        words = [parent.name, child.name, *_param_words(changed, "--set")]
        if child.label and child.label != child.name:
            words += ["--label", child.label]
        cells.append(f"%ultron clone {escape_line(words)}")
    if len(chain) > 1:
        cells.append(f"%ultron diff {escape_line([chain[-2].name, chain[-1].name])}")
    return cells


def export_notebook(ws: Workspace, name: str, out: Path | str) -> ExportResult:
    """Write experiment ``name`` as a self-contained notebook at ``out`` (``.ipynb``)."""
    import nbformat
    from nbformat import v4

    path = Path(out)
    if path.suffix != ".ipynb":
        raise ConfigError(f"export --out {out}: the file must end in .ipynb")
    exp = experiments.experiment_row(ws, name)
    flow = ws.flow(exp.flow_name, exp.flow_version)
    chain = lineage(ws, exp.name)
    remote = bool(ws.settings.flink_url) or exp.target.rstrip("/") != \
        ws.settings.local_flink_url
    scrubber = Scrubber.for_workspace(ws, *(e.target for e in chain))
    scrubber.add((v, "***") for n in flow for k, v in (*n.options, *n.params)
                 if _SECRET_OPTION.search(k) and len(v) >= 3)
    effective = flow.effective_params(exp.params)
    ids = identities(flow, effective)
    intro = [f"# Experiment `{exp.name}`: flow `{flow.name}` version {flow.version}", "",
             f"Exported by ultron_nb {__version__}. Running this notebook top to bottom "
             "defines the flow exactly as the experiment ran it (every node cell gives the "
             "same content identity), launches it"
             + (", and repeats its lineage: " + " → ".join(f"`{e.name}`" for e in chain)
                if len(chain) > 1 else "") + ". `%ultron import` on this file defines the "
             "flow without running anything."]
    settings = ["%load_ext ultron_nb"]
    if remote:
        settings += ["# The experiment ran on a remote Flink cluster, whose address is not "
                     "shared: fill in", "# its REST URL (\"\" runs on a local cluster).",
                     '%config UltronMagic.flink_url = ""']
    cells: list[Any] = [v4.new_markdown_cell("\n".join(intro)),
                        v4.new_code_cell("\n".join(settings)),
                        v4.new_markdown_cell("`cluster up` starts a local Flink cluster (or "
                                             "checks the remote one) and the scheduler."),
                        v4.new_code_cell("%ultron cluster up"),
                        v4.new_markdown_cell(_data_cell(flow)),
                        v4.new_markdown_cell(f"## The flow `{flow.name}`"),
                        v4.new_code_cell(f"%ultron flow {escape_line([flow.name])}")]
    node_cells: dict[int, str] = {}
    for node_name in definition_order(flow):
        node_cells[len(cells)] = node_name
        cells.append(v4.new_code_cell(node_cell(flow[node_name])))
    for node_name, rules in flow.rules.items():
        cells.append(v4.new_code_cell(rule_cell(node_name, rules)))
    rows = [[n, k, default, effective[n][k] if effective[n][k] != default else ""]
            for n in flow.names for k, default in flow[n].params]
    cells.append(v4.new_markdown_cell(
        "## Parameters\n\n" + (_markdown_table(["node", "parameter", "default",
                                                f"in {exp.name}"], rows)
                               if rows else "The flow has no parameters.")))
    cells.append(v4.new_markdown_cell(
        "## Run" + ("\n\nThe lineage, oldest first: each clone shares the nodes whose "
                    "identity did not change; the diff shows which." if len(chain) > 1
                    else "")))
    cells += [v4.new_code_cell(c) for c in _run_cells(chain)]
    cells.append(v4.new_code_cell(f"%ultron status {escape_line([exp.name])}"))
    cells.append(v4.new_markdown_cell(_results(ws, exp, flow)))
    cells.append(v4.new_markdown_cell("Watch it live (a widget in JupyterLab, a table "
                                      "elsewhere):"))
    cells.append(v4.new_code_cell(f"%ultron watch {escape_line([exp.name])}"))
    scrubbed: list[str] = []
    changed: list[str] = []
    for i, c in enumerate(cells):
        c.source, found = scrubber.scrub(c.source)
        if found:
            scrubbed += [f"cell {i}: {f}" for f in found]
            if i in node_cells:
                changed.append(node_cells[i])
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["ultron"] = {
        "format": FORMAT, "experiment": exp.name, "flow": flow.name,
        "flow_version": flow.version, "params": {str(k): str(v) for k, v in exp.params.items()},
        "identities": {n: ids[n] for n in flow.names if n not in changed},
        "changed_nodes": changed, "lineage": [e.name for e in chain],
    }
    text, found = scrubber.scrub(nbformat.writes(nb))
    if found:  # metadata: names and parameters only; scrub them all the same
        scrubbed += [f"metadata: {f}" for f in found]
    nbformat.validate(nbformat.reads(text, as_version=4))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return ExportResult(path, exp.name, flow.name, len(flow), [e.name for e in chain],
                        scrubbed, changed)


# ---------------------------------------------------------------- reading one back
@dataclass
class ExportedNotebook:
    """The parts of an exported notebook that define its flow."""

    flow: str
    node_cells: list[tuple[str, str]]  # (the line after ``%%ultron node``, the body)
    params: dict[str, str]
    identities: dict[str, str]
    experiment: str
    rule_cells: list[tuple[str, str]] = field(default_factory=list)  # ``%%ultron rule``


def read_export(path: Path | str) -> ExportedNotebook:
    """The flow name and node cells of a notebook (exported, or any notebook whose cells
    define one flow with ``%ultron flow`` and ``%%ultron node``)."""
    import nbformat

    file = Path(path)
    try:
        nb = nbformat.read(file, as_version=4)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"import {path}: not a readable notebook ({exc})") from None
    meta = dict(nb.metadata.get("ultron") or {})
    flow = str(meta.get("flow") or "")
    cells: list[tuple[str, str]] = []
    rule_cells: list[tuple[str, str]] = []
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        source = c.source.lstrip()
        first, _, body = source.partition("\n")
        if first.startswith("%%ultron node "):
            cells.append((first[len("%%ultron node "):], body))
        elif first.startswith("%%ultron rule "):
            rule_cells.append((first[len("%%ultron rule "):], body))
        elif not flow and first.startswith("%ultron flow "):
            flow = first[len("%ultron flow "):].strip()
    if not flow or not cells:
        raise ConfigError(f"import {path}: no `%ultron flow` and `%%ultron node` cells found")
    return ExportedNotebook(flow, cells, {str(k): str(v) for k, v in
                                          (meta.get("params") or {}).items()},
                            {str(k): str(v) for k, v in (meta.get("identities") or {}).items()},
                            str(meta.get("experiment") or ""), rule_cells)
