"""Compiling a Flink SQL node of a flow into a validated job: inputs declared, sink planned.

:class:`FlinkCompiler` declares every table a node reads — a local topic (one ordered reader
per partition), a Kafka topic, a dataset, the output of an upstream Flink node (its sink
files, with the producer's watermark) or of a DuckDB/Python node (its files) — substitutes
the node's parameters, plans the query, plans the sink, and has the whole ``INSERT``
optimized — on the job server when one runs (:mod:`ultron_nb.engines.flink.jobclient`):
invalid SQL raises :class:`~ultron_nb.errors.SqlError` naming the node before anything is
submitted.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ultron_nb.engines.flink import ddl, jobconfig
from ultron_nb.engines.flink.connector import connector_jar_url
from ultron_nb.engines.topics import MANIFEST, LocalTopic, check_schema
from ultron_nb.errors import DataError, EngineError, NotFoundError, SqlError
from ultron_nb.flow import Flow, Kind, Node, ResourceType
from ultron_nb.flow.sqltext import substitute
from ultron_nb.store import experiments as repo

if TYPE_CHECKING:
    from ultron_nb.engines.flink.submit import CompiledJob, JobSpec
    from ultron_nb.workspace import Workspace


@dataclass
class CompiledNode:
    """A Flink node compiled for one start: the job, its output record, its upstream."""

    node: str
    instance: str
    job: CompiledJob
    output: dict[str, Any]
    depends_on: list[str]  # flink nodes of the same flow whose output it reads


def resource_shape(node: Node) -> ddl.TableShape:
    return ddl.TableShape(tuple((c.name, c.type) for c in node.columns), node.time_column,
                          node.watermark)


def kafka_module() -> Any:
    try:
        from ultron_nb.engines.flink import kafka
    except ImportError:  # pragma: no cover - the module ships with the package
        raise EngineError("Kafka resources need ultron_nb.engines.flink.kafka") from None
    return kafka


def save_job_spec(folder: Path, spec: JobSpec) -> None:
    ddl.write_json(folder / ddl.JOB_FILE, spec.to_dict())


def load_job_spec(folder: Path) -> JobSpec:
    from ultron_nb.engines.flink.submit import JobSpec

    path = folder / ddl.JOB_FILE
    if not path.is_file():
        raise NotFoundError(f"no compiled job recorded at {path}")
    return JobSpec.from_dict(json.loads(path.read_text()))


#: How a flow table is read: ``batch`` (the files there now, in any order, for batch jobs
#: and ad-hoc queries), ``bounded`` (in order, the backlog, then finish) or ``live`` (in order,
#: then what comes).
TableMode = Literal["batch", "bounded", "live"]


def declare_table(ws: Workspace, name: str, node: Node, output: Mapping[str, Any] | None, *,
                  mode: TableMode, jars: list[str], who: str,
                  monitor_interval: str = "500 ms") -> ddl.SourcePlan:
    """Statements declaring flow table ``name`` — resource ``node``, or the recorded
    ``output`` of one of ``node``'s instances — read in ``mode``; the connector jars it needs
    are added to ``jars``. ``who`` names the reader in errors. Every reader of flow tables
    (launches, ``sql``, ``sql --follow``) declares them here."""
    if node.kind is Kind.RESOURCE:
        shape = resource_shape(node)
        if node.resource_type is ResourceType.KAFKA:
            kafka = kafka_module()
            jars.extend(str(j) for j in kafka.connector_jar_urls())
            text = kafka.kafka_table_ddl(node, name)
            return ddl.SourcePlan(name, [text] if isinstance(text, str) else list(text))
        path = ws.resource_path(node)
        if node.resource_type is not ResourceType.TOPIC:
            return ddl.dataset_source(name, path, shape, node.option_dict.get("format", "json"))
        check_schema(path, list(shape.columns), who=who)
        if not (path / MANIFEST).is_file():
            raise DataError(f"{who}: topic {name!r} has no data at {path}")
        if mode == "batch":
            return ddl.batch_source(name, path, shape)
        jars.append(connector_jar_url())
        return ddl.topic_source(name, path, shape, mode=mode, monitor_interval=monitor_interval)
    if output is None or not output.get("columns"):
        raise NotFoundError(f"{who}: no output of {name!r} is recorded yet")
    shape = ddl.TableShape.from_dict(output)
    folder = Path(output["path"])
    if node.kind is not Kind.FLINK:  # a DuckDB or Python node's files
        return ddl.dataset_source(name, folder, shape, output.get("format", "json"))
    if mode == "batch":
        return ddl.batch_source(name, ddl.output_folder(folder), shape)
    jars.append(connector_jar_url())
    return ddl.output_source(name, folder, shape, int(output.get("partitions", 1)), mode=mode,
                             monitor_interval=monitor_interval)


class FlinkCompiler:
    """Compiles the Flink nodes of one experiment (inputs declared, output planned)."""

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
        self.outputs: dict[str, dict[str, Any]] = {}  # node → output record (this launch)
        self.created_topics: list[Path] = []  # empty topics this compiler created

    def stored_output(self, node: str) -> dict[str, Any] | None:
        if node in self.outputs:
            return self.outputs[node]
        with self.ws.db.read() as conn:
            inst = repo.get_instance(conn, self.instances[node])
        return inst.output if inst and inst.output.get("columns") else None

    # ------------------------------------------------------------------ inputs
    def declare(self, reader: Node, name: str,
                jars: list[str]) -> tuple[ddl.SourcePlan, str | None]:
        """Statements declaring flow table ``name`` for ``reader``; and the flink node it
        depends on (if any)."""
        node = self.flow[name]
        mode: TableMode = ("batch" if not reader.is_stream
                           else "bounded" if self.bounded else "live")
        monitor = jobconfig.node_option(reader.option_dict, "monitor_interval")
        who = f"node {reader.name!r} reads {name!r}"
        if node.kind is Kind.RESOURCE:
            if node.resource_type is ResourceType.TOPIC and mode == "live":
                self._ensure_topic(node)
            return declare_table(self.ws, name, node, None, mode=mode, jars=jars, who=who,
                                 monitor_interval=monitor), None
        out = self.stored_output(name)
        if out is None or not out.get("path"):
            if node.kind is Kind.FLINK:
                raise SqlError(f"{who}, whose output schema is not known yet (it has never "
                               "been compiled)")
            raise SqlError(f"{who} ({node.label}), whose output Flink cannot read (no path "
                           "and columns recorded yet)")
        plan = declare_table(self.ws, name, node, out, mode=mode, jars=jars, who=who,
                             monitor_interval=monitor)
        return plan, (name if node.kind is Kind.FLINK else None)

    def _ensure_topic(self, node: Node) -> None:
        """A live reader of a topic that has no data yet waits for it: create it empty."""
        path = self.ws.resource_path(node)
        if not (path / MANIFEST).is_file():
            LocalTopic(path, int(node.option_dict.get("partitions", "1")),
                       [(c.name, c.type) for c in node.columns], node.time_column).create()
            self.created_topics.append(path)

    def discard_created_topics(self) -> None:
        """Remove the topics this compiler created, while they hold no data."""
        for path in self.created_topics:
            try:
                topic = LocalTopic.open(path)
            except DataError:
                continue
            if not any(topic.segments(k) for k in range(topic.partitions)):
                shutil.rmtree(path, ignore_errors=True)
        self.created_topics.clear()

    # ------------------------------------------------------------------ one node
    def compile(self, name: str, *, extra_params: Mapping[str, str] | None = None
                ) -> CompiledNode:
        """Declare inputs and sink of flink node ``name`` and validate its SQL."""
        from ultron_nb.engines.flink import jobclient
        from ultron_nb.engines.flink.submit import JobSpec

        node = self.flow[name]
        instance = self.instances[name]
        folder = self.ws.instance_dir(instance)
        statements: list[str] = []
        depends: list[str] = []
        jars: list[str] = []
        delays: list[float] = []
        for ref in node.data_inputs():
            plan, dep = self.declare(node, ref, jars)
            statements.extend(plan.statements)
            if dep:
                depends.append(dep)
            if self.flow[ref].watermark:
                delays.append(ddl.duration_seconds(str(self.flow[ref].watermark)))
        if node.is_stream:  # its output's __wm is written by a function of the jar
            jars.append(connector_jar_url())
        from ultron_nb.engines.flink.rest import submission_headers

        params = {**self.params.get(name, {}), **(extra_params or {})}
        s = self.ws.settings
        config = jobconfig.job_config(
            node.option_dict, node=name, experiment=self.experiment, instance=instance,
            target=self.target, live=node.is_stream and not self.bounded,
            headers=submission_headers(s, self.target), verify=s.flink_verify,
            extra_jars=jars)
        spec = JobSpec(node=name, mode="stream" if node.is_stream else "batch",
                       statements=statements, query=substitute(node.body, params),
                       sink_name=f"__sink_{name}", config=config, instance=instance)
        output: dict[str, Any] = {}

        def sink_ddl(columns: list[tuple[str, str]], job: JobSpec) -> str:
            text, record = jobconfig.plan_sink(
                job, columns, node=name, folder=folder, is_stream=node.is_stream,
                time_column=node.time_column, watermark=node.watermark,
                input_delays=delays, options=node.option_dict)
            output.update(record)
            return text

        compiled = jobclient.compile_job(self.ws.settings, spec, sink_ddl, target=self.target)
        self.outputs[name] = output
        return CompiledNode(name, instance, compiled, output, depends)
