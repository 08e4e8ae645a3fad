"""The workspace: settings plus the metadata store, and the flow operations on them.

Every face (magics, CLI, server) goes through a :class:`Workspace`. A failed operation
leaves the store unchanged: a flow is validated before its new version is written, in one
transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ultron_nb.config import Settings, load_settings
from ultron_nb.engines.topics import check_schema
from ultron_nb.errors import ConfigError, FlowError, NotFoundError
from ultron_nb.files import private_dir
from ultron_nb.flow import Flow, Node, ResourceType
from ultron_nb.flow.quality import Rule
from ultron_nb.store import Database, open_database
from ultron_nb.store import flows as flow_repo

if TYPE_CHECKING:
    from ultron_nb.engines.topic_append import AppendResult, TopicTarget

log = logging.getLogger(__name__)


class Workspace:
    """Settings and metadata store of one project directory."""

    def __init__(self, settings: Settings | None = None, *, db: Database | None = None,
                 **overrides: Any):
        self.settings = settings or load_settings(**overrides)
        self._db = db

    @property
    def db(self) -> Database:
        """The metadata store (opened, and created or migrated, on first use).

        The home is created ``0700`` when new (and tightened when it is an ultron home); a
        store given by ``db_url`` must be in a folder that exists."""
        if self._db is None:
            home = self.settings.home
            try:
                private_dir(home, tighten=home.name == ".ultron" or (home / "ultron.db").exists())
            except OSError as exc:
                raise ConfigError(f"home {home}: cannot create it: "
                                  f"{exc.strerror or exc}") from None
            default = f"sqlite:///{home / 'ultron.db'}"
            explicit = bool(self.settings.db_url) and self.settings.db_url != default
            self._db = open_database(self.settings.database_url, create_parent=not explicit)
        return self._db

    @property
    def home(self) -> Path:
        return self.settings.home

    # ------------------------------------------------------------------ paths
    def instance_dir(self, instance_id: str) -> Path:
        """Where a node instance writes its output."""
        return self.settings.home / "topics" / instance_id

    def resource_path(self, node: Node) -> Path:
        """Where a resource's data lives: ``--path`` (relative to the project) or under home."""
        opts = node.option_dict
        if "path" in opts:
            path = Path(opts["path"]).expanduser()
            return path if path.is_absolute() else (self.settings.home.parent / path).resolve()
        folder = "datasets" if node.resource_type in (ResourceType.DATASET,
                                                      ResourceType.FEATURE_TABLE) else "topics"
        return self.settings.home / folder / node.name

    # ------------------------------------------------------------------ flows
    def flow(self, name: str, version: int | None = None, *, create: bool = False) -> Flow:
        """The latest (or given) version of flow ``name``.

        With ``create``, a flow that does not exist yet is returned empty (version 0); it is
        stored when its first node is defined.
        """
        try:
            with self.db.read() as conn:
                return flow_repo.load_flow(conn, name, version)
        except NotFoundError:
            if create and version is None:
                return Flow(name, version=0)
            raise

    def flows(self) -> list[flow_repo.FlowSummary]:
        with self.db.read() as conn:
            return flow_repo.list_flows(conn)

    def history(self, name: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            return flow_repo.flow_history(conn, name)

    def save(self, flow: Flow, change: str = "") -> Flow:
        """Validate ``flow`` and store it as a new version (if it changed)."""
        flow.validate()
        with self.db.write() as conn:
            version = flow_repo.save_flow(conn, flow, change)
        return flow.at_version(version)

    def define(self, flow_name: str, node: Node) -> Flow:
        """Add or redefine ``node`` in flow ``flow_name``; returns the new flow version.

        A topic whose path holds data already (another flow's, generated ones) must be
        declared with columns it holds (:func:`ultron_nb.engines.topics.check_schema`)."""
        if node.resource_type is ResourceType.TOPIC:
            check_schema(self.resource_path(node), [(c.name, c.type) for c in node.columns],
                         who=f"node {node.name!r}")
        with self.db.write() as conn:
            try:
                current = flow_repo.load_flow(conn, flow_name)
            except NotFoundError:  # the first node of a new flow
                current = Flow(flow_name, version=0)
            verb = "redefine" if node.name in current else "define"
            candidate = current.with_node(node).validate()
            version = flow_repo.save_flow(conn, candidate, f"{verb} {node.name}")
        return candidate.at_version(version)

    def set_rules(self, flow_name: str, node_name: str, rules: Sequence[Rule]) -> Flow:
        """Make ``rules`` the data-quality rules of ``node_name`` (replacing its earlier
        ones; none removes them); returns the new flow version. Running experiments keep
        the rules of the version they run; node identities do not change."""
        with self.db.write() as conn:
            current = flow_repo.load_flow(conn, flow_name)
            candidate = current.with_rules(node_name, rules).validate()
            verb = f"rules of {node_name}" if rules else f"remove the rules of {node_name}"
            version = flow_repo.save_flow(conn, candidate, verb)
        return candidate.at_version(version)

    def remove(self, flow_name: str, node_name: str) -> Flow:
        """Remove a node nothing depends on; returns the new flow version."""
        with self.db.write() as conn:
            current = flow_repo.load_flow(conn, flow_name)
            candidate = current.without(node_name).validate()
            version = flow_repo.save_flow(conn, candidate, f"remove {node_name}")
        return candidate.at_version(version)

    # ------------------------------------------------------------------ data
    def append(self, topic_or_node: str | Path, data: Any, *, partition_by: str | None = None,
               partition: int | None = None, flow: str | None = None) -> AppendResult:
        """Append rows (a DataFrame, or a CSV / Parquet / JSON-lines file) to a local topic
        as the next segment of each partition.

        ``topic_or_node`` names a topic node (of ``flow``, else of any flow) or a topic
        directory. Rows go by the hash of ``partition_by`` (default: the topic's ``--key``),
        round robin without a key, or all to ``partition``. See
        :mod:`ultron_nb.engines.topic_append` for the checks and types."""
        from ultron_nb.engines.topic_append import append_rows

        return append_rows(self._append_target(str(topic_or_node), flow), data,
                           partition_by=partition_by, partition=partition)

    def _append_target(self, name: str, flow: str | None) -> TopicTarget:
        from ultron_nb.engines.topic_append import directory_target, node_target

        folder = Path(name).expanduser()
        target = directory_target(folder)
        if target is not None:
            return target
        names = [flow] if flow else [s.name for s in self.flows()]
        flows = [self.flow(f) for f in names]
        found = [(f.name, f[name]) for f in flows if name in f]
        if not found:
            where = f"flow {flow!r}" if flow else "any flow"
            raise NotFoundError(f"append: no topic {name!r} in {where} (nor a topic directory "
                                f"{folder})")
        node = found[0][1]
        if node.resource_type is not ResourceType.TOPIC:
            raise FlowError(f"append: {name!r} is a {node.label}, not a local topic")
        if len({self.resource_path(n) for _, n in found}) > 1:
            raise ConfigError(f"append: topic {name!r} is defined in flows "
                              f"{', '.join(f for f, _ in found)} at different paths: choose "
                              "one with --flow")
        return node_target(name, self.resource_path(node), node)

    # ------------------------------------------------------------------ the current flow
    def current_flow(self, explicit: str | None = None, *, session: str = "") -> tuple[str, str]:
        """The flow a verb acts on, and why: ``explicit``; the one ``session`` (a notebook)
        selected before; the only flow in the store. ConfigError when none applies."""
        if explicit:
            return explicit, ""
        remembered = self._sessions().get(session or "default")
        if remembered and any(f.name == remembered for f in self.flows()):
            return remembered, f"using flow {remembered} (selected before)"
        names = [f.name for f in self.flows()]
        if len(names) == 1:
            return names[0], f"using flow {names[0]} (the only flow in the store)"
        hint = f" (flows: {', '.join(names)})" if names else " (no flows yet)"
        raise ConfigError(f"no current flow: select one with %ultron flow NAME or --flow{hint}")

    def remember_flow(self, name: str, *, session: str = "") -> None:
        """Remember that ``session`` (a notebook) works on flow ``name``."""
        sessions = self._sessions()
        sessions[session or "default"] = name
        path = self.home / "sessions.json"
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sessions, indent=1, sort_keys=True))
        tmp.replace(path)

    def _sessions(self) -> dict[str, str]:
        try:
            data = json.loads((self.home / "sessions.json").read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def render(
        self,
        flow: Flow,
        fmt: Literal["svg", "dot"] = "svg",
        **decorations: Any,
    ) -> str:
        """The flow as DOT text or SVG (SVG needs graphviz's ``dot``)."""
        from ultron_nb.engines.graphviz import dot_to_svg

        dot = flow.to_dot(**decorations)
        return dot if fmt == "dot" else dot_to_svg(dot)
