"""Experiments: launch a flow version on a Flink cluster, follow it, stop and resume it.

An experiment is a launched flow. Each Flink SQL node becomes one Flink job on the target
cluster (the local one by default, or any REST URL — the same code path). Each node runs as
a *node instance* ``<node>_<identity[:12]>`` whose output is a local topic under
``<home>/topics/<instance>/``; an instance with the same content identity that already runs
is shared instead of launched again (see :mod:`ultron_nb.flow.plan`).

Everything that must outlive the kernel goes to the metadata store: the experiment, its
instances and their jobs (Flink job id, state, savepoints, errors). :func:`status` asks
Flink's REST API for the truth and writes it back, so it is right after a kernel restart.

Launching is two-phase: every node is compiled and validated first (nothing is submitted if
any SQL is invalid); then jobs are submitted in topological order, and if a submission fails
the jobs this launch started are cancelled and the experiment is marked failed.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ultron_nb.engines.flink import ddl
from ultron_nb.engines.flink.connector import connector_jar_url
from ultron_nb.engines.flink.rest import FlinkRest
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.errors import (
    ClusterError,
    ConfigError,
    DataError,
    EngineError,
    FlowError,
    NotFoundError,
    SqlError,
    UltronError,
)
from ultron_nb.flow import Flow, Kind, Node, ResourceType
from ultron_nb.flow.edges import Trigger
from ultron_nb.flow.plan import ExistingInstance, Step, plan_launch
from ultron_nb.flow.sqltext import substitute, table_references
from ultron_nb.store import experiments as repo

if TYPE_CHECKING:
    import pandas as pd

    from ultron_nb.engines.flink.submit import CompiledJob, JobSpec
    from ultron_nb.services.workspace import Workspace

log = logging.getLogger(__name__)

ENGINE = "flink"
JOB_FILE = "_ultron_job.json"
WATERMARK_COLUMN = "__wm"
EVENT_SENDER = "ultron.flink"

#: Flink states in which a job still runs (or will run again by itself).
ACTIVE = frozenset({"created", "initializing", "scheduled", "running", "restarting",
                    "failing", "reconciling", "submitting", "cancelling", "canceling"})
#: States set by ultron that Flink does not know (it reports FINISHED / CANCELED for them).
STOPPED = "stopped"
DONE = frozenset({"finished", "failed", "canceled", "stopped", "suspended", "lost"})

DEFAULTS = {
    "parallelism": "1",
    "checkpoint_interval": "5 s",
    "idle_timeout": "",  # none: see ultron_nb.engines.flink.ddl
    "monitor_interval": "500 ms",
    "rollover": "2 s",
    "restart_attempts": "2",
    "restart_delay": "2 s",
}


# ---------------------------------------------------------------- status objects
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
        lines = [f"experiment {self.name} ({self.flow} v{self.flow_version}) on {self.target}: "
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
        import html

        from ultron_nb.flow.render import STATUS_COLORS

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
                   f"v{self.flow_version} on {html.escape(self.target)}: "
                   f"<b>{html.escape(self.state)}</b>")
        if self.message:
            caption += f" — {html.escape(self.message)}"
        return f"<table><caption>{caption}</caption>{head}{''.join(rows)}</table>"


# ---------------------------------------------------------------- helpers
def _rest(ws: Workspace, url: str) -> FlinkRest:
    s = ws.settings
    return FlinkRest(url, headers=s.flink_headers, verify=s.flink_verify)


def _target(ws: Workspace, target: str | None) -> str:
    return (target or ws.settings.target_url).rstrip("/")


def _check_target(ws: Workspace, rest: FlinkRest) -> None:
    try:
        rest.overview()
    except ClusterError as exc:
        if rest.url == ws.settings.local_flink_url.rstrip("/") and not ws.settings.flink_url:
            raise ClusterError(
                f"the local Flink cluster is not running at {rest.url}: start it with "
                "`%ultron cluster up` (or `ultron up`)"
            ) from None
        raise exc from None


def instance_dir(ws: Workspace, instance_id: str) -> Path:
    """Where a node instance writes its output (a local topic directory)."""
    return ws.settings.home / "topics" / instance_id


def resource_path(ws: Workspace, node: Node) -> Path:
    """Where a resource's data lives: ``--path`` (relative to the project) or under home."""
    opts = node.option_dict
    if "path" in opts:
        path = Path(opts["path"]).expanduser()
        return path if path.is_absolute() else (ws.settings.home.parent / path).resolve()
    folder = "datasets" if node.resource_type in (ResourceType.DATASET,
                                                  ResourceType.FEATURE_TABLE) else "topics"
    return ws.settings.home / folder / node.name


def _shape_of_resource(node: Node) -> ddl.TableShape:
    return ddl.TableShape(tuple((c.name, c.type) for c in node.columns), node.time_column,
                          node.watermark)


def _option(node: Node, key: str) -> str:
    return node.option_dict.get(key, DEFAULTS[key])


def _kafka_module() -> Any:
    try:
        from ultron_nb.engines.flink import kafka  # type: ignore[attr-defined]
    except ImportError:
        raise EngineError(
            "Kafka resources need ultron_nb.engines.flink.kafka, which is not installed"
        ) from None
    return kafka


def _job_config(ws: Workspace, node: Node, *, experiment: str, instance: str, target: str,
                live: bool, extra_jars: Sequence[str] = ()) -> dict[str, str]:
    from ultron_nb.engines.flink.submit import target_configuration

    conf = target_configuration(target, headers=ws.settings.flink_headers,
                                verify=ws.settings.flink_verify)
    conf.update({
        "pipeline.name": f"ultron {experiment}/{node.name} [{instance}]",
        "parallelism.default": _option(node, "parallelism"),
        "execution.checkpointing.interval": ddl.flink_duration(
            _option(node, "checkpoint_interval")),
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": _option(node, "restart_attempts"),
        "restart-strategy.fixed-delay.delay": ddl.flink_duration(_option(node, "restart_delay")),
    })
    idle = _option(node, "idle_timeout")
    if live and idle:
        conf["table.exec.source.idle-timeout"] = ddl.flink_duration(idle)
    if extra_jars:
        conf["pipeline.jars"] = ";".join(
            j if j.startswith("file:") else Path(j).resolve().as_uri()
            for j in dict.fromkeys(extra_jars))
    # Options with a dot are Flink settings (e.g. table.exec.mini-batch.enabled=true).
    for key, value in node.option_dict.items():
        if "." in key:
            conf[key] = value
    return conf


@dataclass
class _Compiled:
    """A node compiled for this launch."""

    node: str
    instance: str
    job: CompiledJob
    output: dict[str, Any]
    depends_on: list[str]  # flink nodes of this launch whose output it reads
    replay: Path | None = None  # where this compilation put ordered backlog copies


class _Launch:
    """Compiles the nodes of one experiment (inputs declared, output planned)."""

    def __init__(self, ws: Workspace, flow: Flow, params: Mapping[str, Mapping[str, str]],
                 instances: Mapping[str, str], *, experiment: str, target: str,
                 bounded: bool):
        self.ws = ws
        self.flow = flow
        self.params = params
        self.instances = instances  # node → instance id
        self.experiment = experiment
        self.target = target
        self.bounded = bounded
        self.outputs: dict[str, dict[str, Any]] = {}  # flink node → output spec

    def stored_output(self, node: str) -> dict[str, Any] | None:
        if node in self.outputs:
            return self.outputs[node]
        with self.ws.db.read() as conn:
            inst = repo.get_instance(conn, self.instances[node])
        return inst.output if inst and inst.output.get("columns") else None

    def declare(self, reader: Node, name: str, replay: Path,
                jars: list[str]) -> tuple[ddl.SourcePlan, str | None]:
        """Statements declaring flow table ``name`` for ``reader``; and the flink node it
        depends on (if any)."""
        node = self.flow[name]
        mode: ddl.ReadMode = "bounded" if (self.bounded or not reader.is_stream) else "live"
        monitor = _option(reader, "monitor_interval")
        if node.kind is Kind.RESOURCE:
            shape = _shape_of_resource(node)
            rtype = node.resource_type
            if rtype is ResourceType.TOPIC:
                path = resource_path(self.ws, node)
                if not (path / "_topic.json").is_file():
                    if mode == "bounded":
                        raise DataError(f"topic {name!r} has no data at {path}")
                    LocalTopic(path, int(node.option_dict.get("partitions", "1")),
                               [(c.name, c.type) for c in node.columns],
                               node.time_column).create()
                if mode == "bounded" and not reader.is_stream:
                    return ddl.batch_source(name, path, shape), None
                jars.append(connector_jar_url())
                return ddl.topic_source(name, path, shape, mode=mode,
                                        monitor_interval=monitor), None
            if rtype is ResourceType.KAFKA:
                kafka = _kafka_module()
                text = kafka.kafka_table_ddl(node, name)
                statements = [text] if isinstance(text, str) else list(text)
                jar_fn = getattr(kafka, "connector_jar_urls", None)
                if callable(jar_fn):
                    jars.extend(str(j) for j in jar_fn())
                return ddl.SourcePlan(name, statements), None
            path = resource_path(self.ws, node)
            return ddl.dataset_source(name, path, shape, node.option_dict.get("format", "json")), \
                None
        if node.kind is Kind.FLINK:
            out = self.stored_output(name)
            if out is None:
                raise SqlError(
                    f"node {reader.name!r} reads {name!r}, whose output schema is not known yet "
                    "(it has never been compiled)"
                )
            shape = ddl.TableShape.from_dict(out)
            folder = Path(out["path"])
            if mode == "bounded" and not reader.is_stream:
                return ddl.batch_source(name, ddl.output_folder(folder), shape), name
            jars.append(connector_jar_url())
            return ddl.output_source(name, folder, shape, int(out.get("partitions", 1)),
                                     mode=mode, monitor_interval=monitor), name
        out = self.stored_output(name)
        if out and out.get("path") and out.get("columns"):
            shape = ddl.TableShape.from_dict(out)
            return ddl.dataset_source(name, Path(out["path"]), shape,
                                      out.get("format", "json")), None
        raise SqlError(
            f"node {reader.name!r} reads {name!r} ({node.label}), whose output Flink cannot "
            "read (no path and columns recorded yet)"
        )

    def compile(self, name: str) -> _Compiled:
        """Declare inputs and sink of flink node ``name`` and validate its SQL."""
        from ultron_nb.engines.flink.submit import JobSpec, compile_job

        node = self.flow[name]
        instance = self.instances[name]
        folder = instance_dir(self.ws, instance)
        replay = folder / "_replay" / f"{time.time_ns():x}"
        statements: list[str] = []
        depends: list[str] = []
        jars: list[str] = []
        delays: list[float] = []
        for ref in node.data_inputs():
            plan, dep = self.declare(node, ref, replay, jars)
            statements.extend(plan.statements)
            if dep:
                depends.append(dep)
            src = self.flow[ref]
            if src.watermark:
                delays.append(ddl.duration_seconds(src.watermark))
        query = substitute(node.body, dict(self.params.get(name, {})))
        live = node.is_stream and not self.bounded
        config = _job_config(self.ws, node, experiment=self.experiment, instance=instance,
                             target=self.target, live=live, extra_jars=jars)
        spec = JobSpec(node=name, mode="stream" if node.is_stream else "batch",
                       statements=statements, query=query, sink_name=f"__sink_{name}",
                       config=config)
        output: dict[str, Any] = {}

        def sink_ddl(columns: list[tuple[str, str]], job: JobSpec) -> str:
            rowtimes = [n for n, t in columns if t.endswith("*ROWTIME*")]
            time_column = rowtimes[0] if rowtimes else node.time_column
            clean = [(n, ddl.strip_time_attribute(t).replace(" NOT NULL", ""))
                     for n, t in columns]
            if time_column and time_column not in {n for n, _ in clean}:
                raise SqlError(f"node {name!r}: --time {time_column!r} is not an output column")
            sink_cols = list(clean)
            wm_column = None
            if rowtimes and node.is_stream and not node.watermark:
                job.rowtime = rowtimes[0]
                wm_column = WATERMARK_COLUMN
                rt_type = dict(clean)[rowtimes[0]]
                sink_cols.append((WATERMARK_COLUMN, rt_type))
            output.update({
                "kind": "topic", "path": str(folder), "format": "json",
                "partitions": int(_option(node, "parallelism")),
                "columns": [list(c) for c in clean], "time_column": time_column,
                "watermark": node.watermark or (f"{max(delays):g} s" if delays and not
                                                wm_column else None),
                "watermark_column": wm_column,
            })
            # At most one committed file per sink subtask per checkpoint: readers then see
            # the files of a subtask one at a time, in order.
            rollover = max(ddl.duration_seconds(_option(node, "rollover")),
                           2 * ddl.duration_seconds(_option(node, "checkpoint_interval")))
            return ddl.sink_table(job.sink_name, ddl.output_folder(folder), sink_cols,
                                  rollover=f"{rollover:g} s")

        compiled = compile_job(spec, sink_ddl)
        self.outputs[name] = output
        return _Compiled(name, instance, compiled, output, depends, replay)


def _save_spec(folder: Path, spec: JobSpec) -> None:
    ddl.write_json(folder / JOB_FILE, spec.to_dict())


def _load_spec(folder: Path) -> JobSpec:
    from ultron_nb.engines.flink.submit import JobSpec

    path = folder / JOB_FILE
    if not path.is_file():
        raise NotFoundError(f"no compiled job recorded at {path}")
    return JobSpec.from_dict(json.loads(path.read_text()))


def _clear_output(folder: Path, keep: Path | None = None) -> None:
    """Remove a previous run's output and replay copies (a fresh start recomputes them),
    except the replay directory ``keep`` of the compilation about to run."""
    out = ddl.output_folder(folder)
    if out.is_dir():  # keep the directory: readers' symlinks point at it
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    replays = folder / "_replay"
    if replays.is_dir():
        for child in replays.iterdir():
            if keep is None or child.resolve() != keep.resolve():
                shutil.rmtree(child, ignore_errors=True)


def _has_triggers(node: Node) -> bool:
    return any(e.trigger in (Trigger.AFTER, Trigger.PERIODIC, Trigger.EVENT)
               for e in node.triggers)


# ---------------------------------------------------------------- launch
def launch(
    ws: Workspace,
    flow_name: str,
    *,
    name: str | None = None,
    params: Mapping[str, str] | None = None,
    label: str | None = None,
    target: str | None = None,
    bounded: bool = False,
    wait: bool = True,
    timeout: float = 120.0,
    parent: str | None = None,
) -> ExperimentStatus:
    """Launch the current version of flow ``flow_name`` as experiment ``name``.

    ``params`` are overrides (``PARAM`` or ``NODE.PARAM``); ``label`` tags the experiment
    (default: its name); ``target`` is a Flink REST URL (default: ``settings.target_url``).
    With ``bounded``, stream nodes read what their sources hold now and finish (a replay).
    With ``wait``, returns once every job runs (or finished, or failed). Invalid SQL raises
    :class:`SqlError` before anything is submitted. ``parent`` records the experiment this
    one was cloned from (see :mod:`ultron_nb.services.clone`).
    """
    flow = ws.flow(flow_name)
    if len(flow) == 0:
        raise FlowError(f"flow {flow_name!r} has no nodes")
    flow.validate()
    url = _target(ws, target)
    rest = _rest(ws, url)
    with ws.db.read() as conn:
        if name and repo.experiment_exists(conn, name):
            raise ConfigError(f"an experiment named {name!r} exists already; choose another "
                              "--name")
        exp_name = name or repo.next_experiment_name(conn, flow_name)
        existing = existing_instances(conn, flow, url)
    plan = plan_launch(flow, params, existing)
    instances = {p.node: p.instance_id for p in plan.nodes}
    launcher = _Launch(ws, flow, plan.params, instances, experiment=exp_name, target=url,
                       bounded=bounded)

    # Phase 1: compile every Flink node that must run (nothing is submitted on error).
    to_run = [p for p in plan.nodes if p.step is not Step.SHARE
              and flow[p.node].kind is Kind.FLINK and not _has_triggers(flow[p.node])]
    if any(flow[p.node].kind is Kind.FLINK for p in plan.nodes):
        _check_target(ws, rest)  # a flow of DuckDB and Python nodes needs no cluster
    compiled: dict[str, _Compiled] = {}
    for p in to_run:
        compiled[p.node] = launcher.compile(p.node)
    planned: dict[str, dict[str, Any]] = {}  # DuckDB node → where its runs write
    for p in plan.nodes:
        if p.step is not Step.SHARE and flow[p.node].kind is Kind.DUCKDB:
            from ultron_nb.services.duckdb_nodes import check_node, planned_output

            check_node(flow[p.node], plan.params.get(p.node, {}))
            planned[p.node] = planned_output(instance_dir(ws, p.instance_id), flow[p.node])

    # Record the experiment, its instances and their planned jobs.
    with ws.db.write() as conn:
        exp = repo.create_experiment(
            conn, name=exp_name, flow_name=flow.name, flow_version=flow.version or 0,
            params=dict(params or {}), label=label or exp_name, target=url, parent=parent,
        )
        for p in plan.nodes:
            node = flow[p.node]
            shared_from = None
            if p.step is Step.SHARE:
                shared_from = repo.owner_of(conn, p.instance_id)
                repo.link_node(conn, exp.id, p.node, p.instance_id, shared_from)
                continue
            output: dict[str, Any]
            if node.kind is Kind.RESOURCE:
                output = {"kind": str(node.resource_type), "path": str(resource_path(ws, node)),
                          **_shape_of_resource(node).to_dict()}
                state = "ready"
            elif p.node in compiled:
                output = compiled[p.node].output
                state = "submitting"
            elif p.node in planned:
                output = planned[p.node]
                state = "waiting"
            elif node.kind is Kind.PYTHON:  # ctx.output_path: where readers look for it
                output = {"kind": "dataset", "path": str(ws.settings.home / "data" / p.instance_id)}
                state = "waiting"
            else:
                output = {}
                state = "waiting"
            upstream = {ref: instances[ref] for ref in node.data_inputs()}
            repo.save_instance(conn, repo.InstanceRow(
                id=p.instance_id, identity=p.identity, target=url, node_name=p.node,
                flow_name=flow.name, flow_version=flow.version or 0,
                params=plan.params.get(p.node, {}), upstream=upstream, output=output,
                state=state,
            ))
            repo.link_node(conn, exp.id, p.node, p.instance_id, None)

    # Phase 2: submit in topological order.
    submitted: list[tuple[str, str, int]] = []  # (node, flink job id, job row id)
    try:
        for p in to_run:
            item = compiled[p.node]
            if bounded and item.depends_on:
                for dep in item.depends_on:
                    _await_finished(rest, submitted, dep, timeout)
                item = launcher.compile(p.node)  # re-plan: the upstream output is complete
                compiled[p.node] = item
            job_row_id, job_id = _start(ws, rest, item, attempt=_next_attempt(ws, item.instance))
            submitted.append((p.node, job_id, job_row_id))
    except UltronError as exc:
        _roll_back(ws, rest, exp_name, submitted, failed_node=p.node, error=str(exc))
        raise type(exc)(
            f"{exc} — launch of {exp_name!r} rolled back"
            + (f" (cancelled {', '.join(n for n, _, _ in submitted)})" if submitted else "")
        ) from None
    with ws.db.write() as conn:
        repo.set_experiment_state(conn, exp_name, "running" if submitted else "waiting")
    _scheduler_request(ws, "start", exp_name)
    if wait and submitted:
        _await_started(rest, [j for _, j, _ in submitted], timeout)
    result = status(ws, exp_name)
    for n in result.nodes:
        if n.state == "failed":
            log.warning("experiment %s: node %s failed: %s", exp_name, n.node, n.error)
    return result


def existing_instances(conn: Any, flow: Flow, url: str) -> dict[str, ExistingInstance]:
    """Instances of this flow's nodes on ``url``, keyed by identity, with their job state."""
    out: dict[str, ExistingInstance] = {}
    for node in flow:
        if node.kind not in (Kind.FLINK, Kind.RESOURCE):
            continue
        # Any instance of this node name; the plan matches on identity.
        from sqlalchemy import select

        from ultron_nb.store.schema import node_instances

        rows = conn.execute(select(node_instances.c.id).where(
            node_instances.c.node_name == node.name)).all()
        for (inst_id,) in rows:
            inst = repo.get_instance(conn, inst_id)
            if inst is None or inst.target.rstrip("/") != url:
                continue
            job = repo.latest_job(conn, inst.id)
            state = job.state if job else inst.state
            users = tuple(e.name for e in repo.instance_users(conn, inst.id)
                          if e.state not in DONE)
            out[inst.identity] = ExistingInstance(inst.id, inst.identity, state, users)
    return out


def _next_attempt(ws: Workspace, instance_id: str) -> int:
    with ws.db.read() as conn:
        job = repo.latest_job(conn, instance_id)
    return (job.attempt + 1) if job else 1


def _start(ws: Workspace, rest: FlinkRest, item: _Compiled, *, attempt: int,
           savepoint: str | None = None) -> tuple[int, str]:
    """Submit a compiled node; record the job. Returns (job row id, Flink job id)."""
    from ultron_nb.engines.flink.submit import submit

    folder = instance_dir(ws, item.instance)
    if savepoint is None:
        _clear_output(folder, keep=item.replay)
    folder.mkdir(parents=True, exist_ok=True)
    _save_spec(folder, item.job.spec)
    with ws.db.write() as conn:
        row = repo.add_job(conn, instance_id=item.instance, engine=ENGINE, external_id=None,
                           target=rest.url, state="submitting", attempt=attempt)
    try:
        job_id = submit(item.job, rest, name=job_name(item.job.spec, attempt))
    except UltronError as exc:
        with ws.db.write() as conn:
            repo.update_job(conn, row.id, state="failed", error=str(exc), ended_at=time.time())
            repo.set_instance_state(conn, item.instance, "failed")
        raise
    with ws.db.write() as conn:
        repo.update_job(conn, row.id, external_id=job_id, state="created")
        repo.set_instance_state(conn, item.instance, "created", output=item.output or None)
    log.info("node %s → Flink job %s (%s)", item.node, job_id, rest.web_url(job_id))
    return row.id, job_id


#: A submission not recorded after this many seconds was interrupted (its process died).
SUBMIT_GRACE = 180.0


def job_name(spec: JobSpec, attempt: int) -> str:
    """The name of attempt ``attempt`` of a node's job on the cluster (unique per instance
    and attempt: the way back to a job whose id was never recorded)."""
    return f"{spec.config.get('pipeline.name') or spec.node} #{attempt}"


def _adopt_interrupted(ws: Workspace, instance_id: str) -> repo.JobRow | None:
    """Settle a start interrupted between Flink accepting the job and the store recording
    its id (the process died): the job, found on the cluster by its name, is recorded; a
    submission that never reached Flink is recorded as failed. Returns the job row as it
    is now (None when the latest job is not such a start)."""
    with ws.db.read() as conn:
        job = repo.latest_job(conn, instance_id)
    if job is None or job.engine != ENGINE or job.external_id or job.state != "submitting":
        return None
    try:
        name = job_name(_load_spec(instance_dir(ws, instance_id)), job.attempt)
    except NotFoundError:
        name = None
    with _rest(ws, job.target) as rest:
        found = [j for j in rest.jobs_overview() if name and j["name"] == name]
    with ws.db.write() as conn:
        if found:
            repo.update_job(conn, job.id, external_id=found[0]["jid"], state=found[0]["state"])
            repo.set_instance_state(conn, instance_id, found[0]["state"])
            log.warning("node instance %s: adopted job %s of an interrupted start",
                        instance_id, found[0]["jid"])
        else:
            repo.update_job(conn, job.id, state="failed", ended_at=time.time(),
                            error="the start was interrupted before Flink accepted the job")
            repo.set_instance_state(conn, instance_id, "failed")
        return repo.latest_job(conn, instance_id)


def _await_started(rest: FlinkRest, job_ids: Sequence[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(job_ids)
    while pending and time.monotonic() < deadline:
        states = rest.job_ids()
        pending = [j for j in pending if states.get(j) in (None, "created", "initializing",
                                                            "scheduled")]
        if pending:
            time.sleep(0.2)


def _await_finished(rest: FlinkRest, submitted: Sequence[tuple[str, str, int]], node: str,
                    timeout: float) -> None:
    for name, job_id, _ in submitted:
        if name == node:
            rest.await_state(job_id, {"finished"}, timeout)


def _roll_back(ws: Workspace, rest: FlinkRest, exp_name: str,
               submitted: Sequence[tuple[str, str, int]], *, failed_node: str,
               error: str) -> None:
    for node, job_id, row_id in submitted:
        try:
            rest.cancel(job_id)
        except UltronError as exc:
            log.warning("rollback: cannot cancel job %s of %s: %s", job_id, node, exc)
        with ws.db.write() as conn:
            repo.update_job(conn, row_id, state="canceled", ended_at=time.time(),
                            error=f"rolled back: {failed_node} failed to start")
    with ws.db.write() as conn:
        exp = repo.get_experiment(conn, exp_name)
        for m in repo.members(conn, exp.id):
            inst = repo.get_instance(conn, m.instance_id)
            if inst and inst.state in ("submitting", "created"):
                repo.set_instance_state(conn, m.instance_id, "canceled")
        repo.set_experiment_state(conn, exp_name, "failed")


# ---------------------------------------------------------------- status
def _experiment_row(ws: Workspace, name: str | None) -> repo.ExperimentRow:
    with ws.db.read() as conn:
        if name:
            return repo.get_experiment(conn, name)
        row = repo.latest_experiment(conn)
    if row is None:
        raise NotFoundError("no experiments yet: launch one with `%ultron run`")
    return row


def list_experiments(ws: Workspace, flow_name: str | None = None) -> list[repo.ExperimentRow]:
    """Experiments in the store, newest first (no REST calls)."""
    with ws.db.read() as conn:
        return repo.list_experiments(conn, flow_name)


def _flink_state(recorded: str, reported: str) -> str:
    """The state to show: ultron's own decisions win over Flink's wording for them."""
    if recorded == STOPPED and reported in ("finished", "canceled", "running", "canceling"):
        return STOPPED  # stop-with-savepoint ends as FINISHED (RUNNING for a moment)
    return reported


def _derive(states: Sequence[str]) -> str:
    if not states:
        return "waiting"
    s = set(states)
    for state in ("failed", "failing", "restarting", "lost", "unknown"):
        if state in s:
            return state
    if s & {"running", "created", "initializing", "scheduled", "submitting", "reconciling"}:
        return "running"
    if s <= {STOPPED}:
        return STOPPED
    if s <= {"canceled", "canceling", "cancelling"}:
        return "canceled"
    if s <= {"finished"}:
        return "finished"
    if s <= {"finished", STOPPED, "canceled"}:
        return STOPPED
    return sorted(s)[0]


def status(ws: Workspace, name: str | None = None, *, publish: bool = True) -> ExperimentStatus:
    """The live status of experiment ``name`` (default: the latest), from Flink's REST API.

    Updates the store (job and instance states, root causes) and, with ``publish``, sends each
    stream node's watermark as event ``watermark/<experiment>/<node>`` when it moved.
    """
    exp = _experiment_row(ws, name)
    try:
        flow = ws.flow(exp.flow_name, exp.flow_version)
    except UltronError:
        flow = None
    with ws.db.read() as conn:
        members = repo.members(conn, exp.id)
        insts = {m.node_name: repo.get_instance(conn, m.instance_id) for m in members}
        jobs = {m.node_name: repo.latest_job(conn, m.instance_id) for m in members}
    clients: dict[str, FlinkRest] = {}
    unreachable: dict[str, str] = {}
    result = ExperimentStatus(exp.name, exp.flow_name, exp.flow_version, exp.label, exp.target,
                              exp.state, dict(exp.params))
    order = flow.topological() if flow else [m.node_name for m in members]
    by_name = {m.node_name: m for m in members}
    job_states: list[str] = []
    for node_name in order:
        member = by_name.get(node_name)
        if member is None:
            continue
        inst = insts[node_name]
        node = flow[node_name] if flow and node_name in flow else None
        kind = node.label if node else "?"
        ns = NodeStatus(node_name, kind, inst.state if inst else "unknown",
                        instance=member.instance_id, shared_from=member.shared_from,
                        output=(inst.output or {}).get("path") if inst else None)
        job = jobs[node_name]
        if (job is not None and job.engine == ENGINE and job.state == "submitting"
                and not job.external_id and time.time() - job.started_at > SUBMIT_GRACE):
            job = _adopt_interrupted(ws, member.instance_id)
        if job is not None and job.engine == ENGINE:
            ns.attempt, ns.savepoint, ns.error = job.attempt, job.savepoint, job.error
            ns.state = job.state
            if job.external_id:
                ns.job_id = job.external_id
                url = job.target.rstrip("/")
                if job.state in DONE:  # it has ended: the store knows how; Flink need not
                    ns.web_url = f"{url}/#/job/completed/{job.external_id}/overview"
                elif url in unreachable:
                    ns.state, ns.error = "unknown", unreachable[url]
                else:
                    rest = clients.setdefault(url, _rest(ws, url))
                    ns.web_url = rest.web_url(job.external_id)
                    try:
                        _refresh_job(ws, rest, job, ns, stream=bool(node and node.is_stream))
                    except ClusterError as exc:
                        unreachable[url] = str(exc)
                        ns.state, ns.error = "unknown", str(exc)
            job_states.append(ns.state)
            if publish and not member.shared_from and ns.state != "unknown":
                publish_state(ws, exp.name, node_name, ns.state, attempt=job.attempt,
                              job_id=job.external_id)
            if publish and ns.watermark_ms is not None and not member.shared_from:
                publish_watermark(ws, exp.name, node_name, ns.watermark_ms)
        elif job is not None:  # a run of the scheduler's (Python, DuckDB): as recorded
            ns.state, ns.attempt, ns.error = job.state, job.attempt, job.error
        elif inst is not None and node is not None and node.kind is Kind.FLINK:
            job_states.append(inst.state) if inst.state not in ("waiting",) else None
        result.nodes.append(ns)
    for rest in clients.values():
        rest.close()
    derived = _derive(job_states) if job_states else exp.state
    if exp.state == "failed" and derived in ("canceled", STOPPED):
        derived = "failed"  # a rolled-back launch stays failed
    if exp.state in ("canceled", STOPPED, "stopping") and derived in ACTIVE:
        # A stopped experiment stays stopped while its shared jobs run on for others.
        derived = exp.state
    result.state = derived
    if unreachable:
        result.message = next(iter(unreachable.values()))
    if derived != exp.state and derived not in ("unknown",):
        with ws.db.write() as conn:
            repo.set_experiment_state(conn, exp.name, derived)
    return result


def _refresh_job(ws: Workspace, rest: FlinkRest, job: repo.JobRow, ns: NodeStatus, *,
                 stream: bool) -> None:
    assert job.external_id
    try:
        info = rest.job(job.external_id)
        reported = info.state
    except NotFoundError:
        reported = "lost"
    state = _flink_state(job.state, reported)
    if reported == "lost" and job.state in DONE:
        state = job.state  # the cluster forgot a job that had ended: keep what we know
    ns.state = state
    error = job.error
    if state in ("failed", "failing", "restarting"):
        try:
            cause = rest.root_cause(job.external_id)
        except UltronError:
            cause = None
        error = cause or error
    elif state == "lost":
        error = f"{rest.url} does not know job {job.external_id} (cluster restarted?)"
    ns.error = error if state in ("failed", "failing", "restarting", "lost") else job.error \
        if state in ("canceled",) else None
    if stream and state == "running":
        try:
            ns.watermark_ms = rest.job_watermark(job.external_id)
        except UltronError:
            ns.watermark_ms = None
    if state != job.state or (error and error != job.error):
        ended = time.time() if state in DONE and job.ended_at is None else job.ended_at
        with ws.db.write() as conn:
            repo.update_job(conn, job.id, state=state, error=error, ended_at=ended)
            repo.set_instance_state(conn, job.instance_id, state)


def publish_watermark(ws: Workspace, experiment: str, node: str, watermark_ms: int) -> bool:
    """Send ``watermark/<experiment>/<node>`` = epoch ms if it moved; True when sent.

    The single place ultron publishes watermarks, so the scheduler's needs can change it.
    """
    from ultron_nb.events import latest, send_event

    key = f"watermark/{experiment}/{node}"
    last = latest(ws.db, key)
    if last is not None and last.value == watermark_ms:
        return False
    send_event(ws.db, key, int(watermark_ms), sender=EVENT_SENDER)
    return True


def publish_state(ws: Workspace, experiment: str, node: str, state: str, *,
                  attempt: int | None = None, job_id: str | None = None) -> bool:
    """Send ``status/<experiment>/<node>`` = ``{"state", "attempt", "job_id"}`` if it changed.

    The scheduler follows Flink nodes through these events (its vocabulary maps
    ``canceled`` to stopped and ``lost`` to failed). True when sent.
    """
    from ultron_nb.events import latest, send_event

    key = f"status/{experiment}/{node}"
    value = {"state": state, "attempt": attempt, "job_id": job_id}
    last = latest(ws.db, key)
    if last is not None and last.value == value:
        return False
    send_event(ws.db, key, value, sender=EVENT_SENDER)
    return True


def watermarks(ws: Workspace, name: str | None = None) -> dict[str, datetime | None]:
    """Each running stream node's current watermark (naive UTC)."""
    st = status(ws, name)
    return {n.node: n.watermark for n in st.nodes if n.watermark_ms is not None}


# ---------------------------------------------------------------- stop / resume / restart
def _flink_members(ws: Workspace, exp: repo.ExperimentRow, flow: Flow | None,
                   ) -> list[tuple[repo.MemberRow, repo.InstanceRow, repo.JobRow | None]]:
    with ws.db.read() as conn:
        out = []
        for m in repo.members(conn, exp.id):
            inst = repo.get_instance(conn, m.instance_id)
            job = repo.latest_job(conn, m.instance_id)
            if inst is None:
                continue
            if job is None and not (flow and m.node_name in flow
                                    and flow[m.node_name].kind is Kind.FLINK):
                continue
            out.append((m, inst, job))
    if flow:
        order = {n: i for i, n in enumerate(flow.topological())}
        out.sort(key=lambda t: order.get(t[0].node_name, 0))
    return out


def stop(ws: Workspace, name: str, *, savepoint: bool = False,
         timeout: float = 120.0) -> ExperimentStatus:
    """Stop the experiment's jobs: with ``savepoint``, stop-with-savepoint (resumable);
    otherwise cancel. Instances shared with another running experiment keep running."""
    exp = _experiment_row(ws, name)
    flow = _flow_or_none(ws, exp)
    _scheduler_request(ws, "stop", exp.name)  # cancel pending starts, stop Python nodes
    current = status(ws, exp.name, publish=False)
    states = current.node_states()
    notes: list[str] = []
    members = _flink_members(ws, exp, flow)
    for m, inst, job in reversed(members):
        if job is None or not job.external_id or states.get(m.node_name) not in ACTIVE:
            continue
        note = _stop_instance(ws, exp.name, m.node_name, inst, job, savepoint=savepoint,
                              timeout=timeout)
        if note:
            notes.append(note)
    with ws.db.write() as conn:
        repo.set_experiment_state(conn, exp.name, STOPPED if savepoint else "canceled")
    result = status(ws, exp.name, publish=False)
    if notes:
        result.message = "; ".join(notes)
    return result


def _stop_instance(ws: Workspace, experiment: str, node: str, inst: repo.InstanceRow,
                   job: repo.JobRow, *, savepoint: bool, timeout: float) -> str | None:
    """Stop one running instance unless another active experiment still uses it."""
    assert job.external_id
    with ws.db.read() as conn:
        others = [e.name for e in repo.instance_users(conn, inst.id)
                  if e.name != experiment and e.state not in DONE]
    if others:
        return f"{node} kept running for {', '.join(others)}"
    with _rest(ws, job.target) as rest:
        if savepoint:
            location = rest.stop_with_savepoint(job.external_id, timeout=timeout)
            # The savepoint completes before the job leaves RUNNING: wait for the end, or a
            # status read in between would record it as running again.
            rest.await_state(job.external_id, {"finished", "canceled"}, timeout)
            with ws.db.write() as conn:
                repo.update_job(conn, job.id, state=STOPPED, savepoint=location,
                                ended_at=time.time())
                repo.set_instance_state(conn, inst.id, STOPPED)
            log.info("node %s stopped with savepoint %s", node, location)
        else:
            rest.cancel(job.external_id)
            rest.await_state(job.external_id, {"canceled"}, timeout)
            with ws.db.write() as conn:
                repo.update_job(conn, job.id, state="canceled", ended_at=time.time())
                repo.set_instance_state(conn, inst.id, "canceled")
    return None


def stop_node(ws: Workspace, name: str, node: str, *, savepoint: bool = False,
              timeout: float = 120.0) -> ExperimentStatus:
    """Stop one Flink node of an experiment (with a savepoint, or cancel it)."""
    exp = _experiment_row(ws, name)
    with ws.db.read() as conn:
        member = next((m for m in repo.members(conn, exp.id) if m.node_name == node), None)
        if member is None:
            raise NotFoundError(f"experiment {exp.name!r} has no node {node!r}")
        inst = repo.get_instance(conn, member.instance_id)
        job = repo.latest_job(conn, member.instance_id)
    note = None
    if inst is not None and job is not None and job.external_id and not member.shared_from:
        with _rest(ws, job.target) as rest:
            try:
                active = rest.job_state(job.external_id) in ACTIVE
            except NotFoundError:
                active = False
        if active:
            note = _stop_instance(ws, exp.name, node, inst, job, savepoint=savepoint,
                                  timeout=timeout)
    result = status(ws, exp.name)
    if note:
        result.message = note
    return result


def _scheduler_request(ws: Workspace, action: str, experiment: str) -> None:
    """Tell the scheduler daemon (now or when it next runs) to start or stop the experiment's
    triggered nodes; the request is an event in the store, so none is lost."""
    from ultron_nb.services.scheduler import request_start, request_stop

    (request_start if action == "start" else request_stop)(ws.db, experiment)


def _flow_or_none(ws: Workspace, exp: repo.ExperimentRow) -> Flow | None:
    try:
        return ws.flow(exp.flow_name, exp.flow_version)
    except UltronError:
        return None


def resume(ws: Workspace, name: str, *, timeout: float = 120.0) -> ExperimentStatus:
    """Start the experiment's stopped jobs again from their last savepoints."""
    exp = _experiment_row(ws, name)
    flow = _flow_or_none(ws, exp)
    rest = _rest(ws, exp.target)
    _check_target(ws, rest)
    todo: list[tuple[str, str, str, int]] = []  # node, instance, savepoint, attempt
    missing: list[str] = []
    with ws.db.read() as conn:
        for m, inst, job in _flink_members(ws, exp, flow):
            if m.shared_from or job is None or job.state in ACTIVE:
                continue
            sp = repo.last_savepoint(conn, inst.id)
            if sp is None:
                missing.append(m.node_name)
            else:
                todo.append((m.node_name, inst.id, sp, job.attempt + 1))
    if missing:
        raise NotFoundError(
            f"experiment {exp.name!r}: no savepoint for {', '.join(missing)}; stop with "
            "--savepoint first, or restart those nodes"
        )
    started: list[str] = []
    for node_name, inst_id, sp, attempt in todo:
        item = _resumable(ws, inst_id, node_name, sp)
        _, job_id = _start(ws, rest, item, attempt=attempt, savepoint=sp)
        with ws.db.write() as conn:
            job = repo.latest_job(conn, inst_id)
            if job:
                repo.update_job(conn, job.id, savepoint=sp)
        started.append(job_id)
    with ws.db.write() as conn:
        repo.set_experiment_state(conn, exp.name, "running" if started else exp.state)
    _scheduler_request(ws, "start", exp.name)
    _await_started(rest, started, timeout)
    rest.close()
    return status(ws, exp.name)


def _resumable(ws: Workspace, inst_id: str, node_name: str, savepoint: str) -> _Compiled:
    from ultron_nb.engines.flink.submit import prepare

    spec = _load_spec(instance_dir(ws, inst_id))
    spec.config["execution.savepoint.path"] = savepoint
    with ws.db.read() as conn:
        inst = repo.get_instance(conn, inst_id)
    return _Compiled(node_name, inst_id, prepare(spec), dict(inst.output) if inst else {}, [])


def restart_node(ws: Workspace, name: str, node: str, *, from_savepoint: bool = False,
                 timeout: float = 120.0,
                 params: Mapping[str, str] | None = None) -> ExperimentStatus:
    """Start one Flink node of the experiment again (e.g. after it failed).

    By default the node starts afresh: its SQL is compiled again and its output recomputed.
    With ``from_savepoint`` it resumes from its last savepoint. A running job is cancelled
    first.
    """
    exp = _experiment_row(ws, name)
    flow = ws.flow(exp.flow_name, exp.flow_version)
    target_node = flow[node]
    if target_node.kind is not Kind.FLINK:
        raise FlowError(f"node {node!r} is a {target_node.label}, not a Flink job")
    rest = _rest(ws, exp.target)
    _check_target(ws, rest)
    with ws.db.read() as conn:
        member = next((m for m in repo.members(conn, exp.id) if m.node_name == node), None)
        if member is None:
            raise NotFoundError(f"experiment {exp.name!r} has no node {node!r}")
        job = repo.latest_job(conn, member.instance_id)
        sp = repo.last_savepoint(conn, member.instance_id) if from_savepoint else None
    if member.shared_from:
        raise ConfigError(f"node {node!r} is shared from {member.shared_from}: restart it there")
    if job and job.external_id:
        with _rest(ws, job.target) as old:
            try:
                if old.job_state(job.external_id) in ACTIVE:
                    old.cancel(job.external_id)
                    old.await_state(job.external_id, {"canceled"}, timeout)
            except NotFoundError:
                pass
    if from_savepoint:
        if sp is None:
            raise NotFoundError(f"node {node!r} has no savepoint")
        item = _resumable(ws, member.instance_id, node, sp)
    else:
        effective = flow.effective_params(exp.params)
        if params:  # e.g. the window of a boundary trigger, for ${window_start} in the SQL
            effective = {n: dict(p) for n, p in effective.items()}
            effective[node] = {**effective.get(node, {}), **params}
        with ws.db.read() as conn:
            instances = {m.node_name: m.instance_id for m in repo.members(conn, exp.id)}
        launcher = _Launch(ws, flow, effective, instances, experiment=exp.name,
                           target=exp.target, bounded=False)
        item = launcher.compile(node)
    attempt = (job.attempt + 1) if job else 1
    _, job_id = _start(ws, rest, item, attempt=attempt, savepoint=sp)
    _await_started(rest, [job_id], timeout)
    rest.close()
    return status(ws, exp.name)


def start_node(ws: Workspace, name: str, node: str, *,
               params: Mapping[str, str] | None = None,
               timeout: float = 120.0) -> ExperimentStatus:
    """Start a node that is not running (waiting for a trigger, or ended): afresh.

    A node whose job runs already is left alone. ``params`` add to the node's parameters for
    this run (the scheduler passes a boundary trigger's ``window_start``/``window_end``).
    """
    exp = _experiment_row(ws, name)
    with ws.db.read() as conn:
        member = next((m for m in repo.members(conn, exp.id) if m.node_name == node), None)
        job = repo.latest_job(conn, member.instance_id) if member else None
    if member is not None and job is not None and job.state == "submitting":
        adopted = _adopt_interrupted(ws, member.instance_id)
        if adopted is not None and adopted.state not in ("failed", "canceled"):
            return status(ws, exp.name)  # that start ran (or runs): not a second time
        job = adopted
    if job is not None and job.external_id:
        with _rest(ws, job.target) as rest:
            try:
                if rest.job_state(job.external_id) in ACTIVE:
                    return status(ws, exp.name)
            except NotFoundError:
                pass
    return restart_node(ws, name, node, timeout=timeout, params=params)


# ---------------------------------------------------------------- reading outputs
def _find_member(ws: Workspace, node: str, experiment: str | None, flow_name: str | None,
                 ) -> tuple[repo.ExperimentRow, repo.InstanceRow] | None:
    with ws.db.read() as conn:
        candidates = ([repo.get_experiment(conn, experiment)] if experiment
                      else repo.list_experiments(conn, flow_name))
        for exp in candidates:
            for m in repo.members(conn, exp.id):
                if m.node_name == node:
                    inst = repo.get_instance(conn, m.instance_id)
                    if inst is not None:
                        return exp, inst
    return None


def read_output_file(path: Path) -> bytes:
    """The content of one file of :func:`output_files`, complete lines only (b"" if gone).

    An in-progress part file that a checkpoint commits (renames) after the listing is read
    under its committed name, so no row written before the listing is missed; the
    unfinished last line of a file being written is left out.
    """
    committed = ddl.committed_name(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        try:
            return committed.read_bytes() if committed else b""
        except FileNotFoundError:
            return b""  # the output was cleared by a fresh start
    return data[:data.rfind(b"\n") + 1] if committed else data


def _read_json_lines(paths: Sequence[Path], limit: int | None) -> list[dict[str, Any]]:
    """Rows of JSON-lines files, in order; the last ``limit`` of them."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            text = read_output_file(path).decode(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the unfinished last line of an in-progress file
    if limit is not None and len(rows) > limit:
        rows = rows[-limit:]
    return rows


def output_files(folder: Path, *, in_progress: bool = True) -> list[Path]:
    """Files of a node instance's output in write order (committed, then in progress).

    In-progress files are listed first: a file committed between the two listings then
    shows up as committed (its in-progress entry dropped) instead of in neither.
    """
    out_dir = ddl.output_folder(folder)
    pending = ddl.in_progress_files(out_dir) if in_progress else []
    files = [p for subtask in sorted(ddl.part_files(out_dir).items()) for p in subtask[1]]
    committed = set(files)
    return files + [p for p in pending if ddl.committed_name(p) not in committed]


def _frame(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> pd.DataFrame:
    import pandas as pd

    names = [n for n, _ in columns] if columns else None
    frame = pd.DataFrame(rows, columns=names)
    for n, t in columns:
        if t.upper().startswith("TIMESTAMP") and n in frame:
            # ISO8601: Flink drops a zero fraction ("00:04:04"), so the values mix formats;
            # format inference from the first value would turn the others into NaT.
            frame[n] = pd.to_datetime(frame[n].astype("string").str.replace("Z", "", regex=False),
                                      errors="coerce", format="ISO8601")
    return frame


def preview(ws: Workspace, node: str, *, experiment: str | None = None,
            flow: str | None = None, limit: int = 20) -> pd.DataFrame:
    """The latest ``limit`` rows of ``node``'s output (a Flink node's output topic, or a
    resource's data), as a pandas DataFrame.

    A Flink node is looked up in ``experiment`` (default: the latest experiment that has it,
    within ``flow`` when given). Rows still in Flink's in-progress files are included.
    """
    if limit <= 0:
        raise ConfigError("--limit must be positive")
    found = _find_member(ws, node, experiment, flow)
    if found is not None:
        exp, inst = found
        out = inst.output or {}
        columns = [tuple(c) for c in out.get("columns", [])]
        path = Path(out["path"]) if out.get("path") else None
        if path is None:
            raise NotFoundError(f"node {node!r} of {exp.name!r} has no output yet")
        if (path / JOB_FILE).exists():  # a Flink node's output
            rows = _read_json_lines(output_files(path), limit)
        elif _kind_of(ws, exp, node) in (Kind.DUCKDB, Kind.PYTHON):  # files a run wrote
            from ultron_nb.services.duckdb_nodes import preview_rows

            return preview_rows(out, limit)
        else:
            rows = _read_topic_or_files(path, limit)
        return _frame([{k: v for k, v in r.items() if k != WATERMARK_COLUMN} for r in rows],
                      columns)  # type: ignore[arg-type]
    if flow:
        f = ws.flow(flow)
        if node in f and f[node].kind is Kind.RESOURCE:
            res = f[node]
            return _frame(_read_topic_or_files(resource_path(ws, res), limit),
                          [(c.name, c.type) for c in res.columns])
    raise NotFoundError(f"no experiment runs node {node!r}" +
                        (f" of flow {flow!r}" if flow else "") + ": launch one with "
                        "`%ultron run`")


def _kind_of(ws: Workspace, exp: repo.ExperimentRow, node: str) -> Kind | None:
    flow = _flow_or_none(ws, exp)
    return flow[node].kind if flow is not None and node in flow else None


def _read_topic_or_files(path: Path, limit: int) -> list[dict[str, Any]]:
    if (path / "_topic.json").is_file():
        topic = LocalTopic.open(path)
        files = [seg for k in range(topic.partitions) for seg in topic.segments(k)]
        files.sort(key=lambda p: p.stat().st_mtime)
        return _read_json_lines(files, limit)
    if path.is_file():
        return _read_json_lines([path], limit)
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file()
                        and not p.name.startswith((".", "_"))), key=lambda p: p.stat().st_mtime)
        return _read_json_lines(files, limit)
    raise NotFoundError(f"no data at {path}")


def sql(ws: Workspace, query: str, *, flow: str, experiment: str | None = None,
        limit: int = 100) -> pd.DataFrame:
    """Run a bounded, row-limited Flink SQL query over the flow's tables; a DataFrame.

    Resources are read as they are now; a Flink node's table is the output of its instance in
    ``experiment`` (default: the latest experiment of the flow that has it). The query runs in
    this process (batch mode), so it takes no slot from the experiments' cluster.
    """
    from ultron_nb.engines.flink.submit import collect

    if limit <= 0:
        raise ConfigError("limit must be positive")
    f = ws.flow(flow)
    statements: list[str] = []
    for ref in table_references(query):
        if ref not in f:
            continue
        node = f[ref]
        if node.kind is Kind.RESOURCE:
            shape = _shape_of_resource(node)
            if node.resource_type is ResourceType.KAFKA:
                statements.extend(_as_list(_kafka_module().kafka_table_ddl(node, ref)))
                continue
            path = resource_path(ws, node)
            if node.resource_type is ResourceType.TOPIC:
                statements.extend(ddl.batch_source(ref, path, shape).statements)
            else:
                statements.extend(ddl.dataset_source(
                    ref, path, shape, node.option_dict.get("format", "json")).statements)
            continue
        found = _find_member(ws, ref, experiment, flow)
        if found is None or not found[1].output.get("columns"):
            raise NotFoundError(f"table {ref!r}: no experiment of flow {flow!r} has its output "
                                "yet")
        out = found[1].output
        statements.extend(ddl.batch_source(
            ref, ddl.output_folder(Path(out["path"])), ddl.TableShape.from_dict(out)).statements)
    columns, rows = collect(statements, query, limit=limit, name="sql")
    import pandas as pd

    return pd.DataFrame([list(r) for r in rows], columns=columns)


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
