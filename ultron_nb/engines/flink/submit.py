"""Compile SQL nodes into Flink jobs and submit them through PyFlink, in this process.

This is what the job server (:mod:`ultron_nb.engines.flink.jobserver`) runs, and what a
process runs itself when no job server answers (:mod:`ultron_nb.engines.flink.jobclient`
chooses). The PyFlink JVM gateway is started on first use and kept warm, so a second
submission from the same process takes a fraction of the first. Every job is submitted with
``execution.target=remote`` and the target's ``rest.address``/``rest.port`` through
``EnvironmentSettings.with_configuration`` — the path that really reaches the cluster (the
same settings given to a ``StreamExecutionEnvironment`` outside ``flink run`` silently run a
mini cluster in-process). After submission the job id is checked in the target's ``GET /jobs``.

SQL is validated before anything is submitted: the query is planned (``sql_query``), then the
whole ``INSERT`` is optimized — compiled into a plan for a stream job (``compilePlanSql``, its
operator ids made stable by :mod:`~ultron_nb.engines.flink.plans`, run as it is at submission
and again at a resume), ``explain_sql`` for a batch job — which also
catches queries a sink cannot take (updates into an append-only topic, two rowtime columns).
Errors become :class:`~ultron_nb.errors.SqlError` with the planner's useful line and the
node's name.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from ultron_nb.engines.flink import ddl
from ultron_nb.engines.flink.plans import stable_ids
from ultron_nb.errors import ClusterError, ConfigError, SqlError

log = logging.getLogger(__name__)

_LOCK = threading.RLock()
_GATEWAY_HEADERS: str | None = None
_HEADERS_ENV = "FLINK_REST_CLIENT_HEADERS"
#: PyFlink starts a Python worker-pool gRPC server on ``[::]:0`` for every local table
#: environment ("loopback" mode), one per call, never closed; in "process" mode it starts
#: none (Python functions, if a query had any, run in worker processes of their own).
_WORKER_MODE_ENV = "_python_worker_execution_mode"
LOOPBACK = "127.0.0.1"
#: A query run in this process runs in a mini cluster: every server of it on loopback.
LOCAL_EXECUTION = {
    "rest.address": LOOPBACK,
    "rest.bind-address": LOOPBACK,
    "jobmanager.bind-host": LOOPBACK,
    "taskmanager.bind-host": LOOPBACK,
    "taskmanager.host": LOOPBACK,
}

Mode = Literal["stream", "batch"]
#: Options PyFlink's ``Configuration.set_string`` acts on (the jars the planner needs are put
#: on the gateway's class loader); every other option is set on the Java object directly.
_CLASS_LOADER_KEYS = frozenset({"pipeline.jars", "pipeline.classpaths"})


# ---------------------------------------------------------------- messages
_PREFIX = re.compile(r"^An error occurred while calling [\w.]+\.\s*:?\s*", re.DOTALL)
_JAVA_CLASS = re.compile(r"^(?:[a-z_][\w$]*\.)+([A-Z][\w$]*)(?=:)")
_LINE_COL = re.compile(r"\bline (\d+), column (\d+)")


def planner_message(exc: BaseException, *, line_offset: int = 0) -> str:
    """The useful line of a PyFlink / Java exception.

    The first line of the message when it points into the SQL (``From line 2, column 3``,
    ``Encountered "x" at line 1``), else the deepest ``Caused by``; Java package names are
    dropped and line numbers are shifted by ``line_offset``.
    """
    text = str(exc)
    text = _PREFIX.sub("", text.strip())
    lines = [ln.rstrip() for ln in text.splitlines()]
    heads = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("at ")
             and not ln.lstrip().startswith("...")]
    if not heads:
        return type(exc).__name__
    first = heads[0]
    causes = [h[len("Caused by:"):].strip() for h in heads if h.startswith("Caused by:")]
    best = first
    if not _LINE_COL.search(first) and causes:
        best = causes[-1]
    best = _JAVA_CLASS.sub(r"\1", best)
    best = best.replace("ValidationException: SQL validation failed. ", "")
    best = best.replace("SqlParserException: SQL parse failed. ", "SQL parse error: ")
    if line_offset:
        best = _LINE_COL.sub(
            lambda m: f"line {max(1, int(m.group(1)) - line_offset)}, column {m.group(2)}", best
        )
    return best[:600]


def _is_java_error(exc: BaseException) -> bool:
    mod = type(exc).__module__
    return mod.startswith("py4j") or mod.startswith("pyflink")


# ---------------------------------------------------------------- targets
def target_configuration(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    verify: bool | str = True,
) -> dict[str, str]:
    """Flink client settings that submit to the REST endpoint ``url``."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        raise ConfigError(f"flink_url {url!r}: no host")
    https = parts.scheme == "https"
    conf = {
        "execution.target": "remote",
        "rest.address": parts.hostname,
        "rest.port": str(parts.port or (443 if https else 80)),
    }
    prefix = parts.path.rstrip("/")
    if prefix:
        conf["rest.url-prefix"] = prefix
    if https:
        conf["security.ssl.rest.enabled"] = "true"
        if isinstance(verify, str) and verify.endswith((".jks", ".p12", ".pfx")):
            conf["security.ssl.rest.truststore"] = verify
    _ensure_gateway_headers(headers or {})
    return conf


def expect_rest_headers(headers: Mapping[str, str]) -> None:
    """Headers the PyFlink JVM's REST client must send (credentials of the configured
    cluster): they are read from its environment when it starts, so say them before any
    PyFlink use in this process (an ad-hoc query starts the JVM too)."""
    _ensure_gateway_headers(headers)


def _ensure_gateway_headers(headers: Mapping[str, str]) -> None:
    """Flink's REST client reads extra headers from its JVM's environment (set before start)."""
    global _GATEWAY_HEADERS
    wanted = "\n".join(f"{k}:{v}" for k, v in sorted(headers.items()))
    if _GATEWAY_HEADERS is None:  # the JVM has not started yet (or we do not know)
        if wanted:
            os.environ[_HEADERS_ENV] = wanted
        return
    if wanted != _GATEWAY_HEADERS:
        log.warning(
            "the PyFlink JVM was started with other REST headers; job submission keeps using "
            "those (restart the kernel to change flink_headers)"
        )


def _gateway_started() -> None:
    global _GATEWAY_HEADERS
    if _GATEWAY_HEADERS is None:
        _GATEWAY_HEADERS = os.environ.get(_HEADERS_ENV, "")


def table_environment(mode: Mode, conf: Mapping[str, str]) -> Any:
    """A new PyFlink ``TableEnvironment`` with ``conf`` (the JVM gateway is shared)."""
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    with _LOCK:
        configuration = Configuration()
        for key, value in conf.items():
            if key in _CLASS_LOADER_KEYS:  # PyFlink adds these jars to its class loader
                configuration.set_string(key, str(value))
            else:  # one call into the JVM (set_string makes several to look up the above)
                configuration._j_configuration.setString(key, str(value))
        builder = EnvironmentSettings.new_instance()
        builder = builder.in_streaming_mode() if mode == "stream" else builder.in_batch_mode()
        given = os.environ.get(_WORKER_MODE_ENV)
        os.environ[_WORKER_MODE_ENV] = "process"  # no worker-pool server (see above)
        try:
            env = TableEnvironment.create(builder.with_configuration(configuration).build())
        finally:
            if given is None:
                os.environ.pop(_WORKER_MODE_ENV, None)
            else:
                os.environ[_WORKER_MODE_ENV] = given
        _gateway_started()
        return env


# ---------------------------------------------------------------- jobs
@dataclass
class JobSpec:
    """Everything needed to run one SQL node as one Flink job."""

    node: str
    mode: Mode
    statements: list[str]  # CREATE TEMPORARY TABLE / VIEW for the inputs
    query: str  # the node's SELECT, parameters substituted
    sink_name: str
    sink_ddl: str = ""  # filled by compile_job once the output schema is known
    config: dict[str, str] = field(default_factory=dict)
    rowtime: str | None = None  # output rowtime column: its watermark is written as __wm
    #: How __wm is written (ddl.EPOCH_MS; None: a timestamp, as jobs compiled before did).
    watermark_format: str | None = None
    plan: str | None = None  # the compiled plan (JSON) a stream job runs: a resume runs it again
    instance: str = ""  # the node instance it writes for (its sink ids are salted by it)

    @property
    def insert(self) -> str:
        """The INSERT; the query starts on line 2 (error line numbers are shifted by 1)."""
        if self.rowtime:
            rt = "`" + self.rowtime.replace("`", "``") + "`"
            mark = f"CURRENT_WATERMARK({rt})"
            if self.watermark_format == ddl.EPOCH_MS:
                mark = f"{ddl.quote_ident(ddl.WM_TO_MS)}({mark})"
            head = f"INSERT INTO `{self.sink_name}` SELECT *, {mark} FROM ("
            return f"{head}\n{self.query}\n)"
        return f"INSERT INTO `{self.sink_name}`\n{self.query}"

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "mode": self.mode, "statements": list(self.statements),
                "query": self.query, "sink_name": self.sink_name, "sink_ddl": self.sink_ddl,
                "config": dict(self.config), "rowtime": self.rowtime, "plan": self.plan,
                "instance": self.instance, "watermark_format": self.watermark_format}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        return cls(node=data["node"], mode=data["mode"], statements=list(data["statements"]),
                   query=data["query"], sink_name=data["sink_name"],
                   sink_ddl=data.get("sink_ddl", ""), config=dict(data.get("config", {})),
                   rowtime=data.get("rowtime"), plan=data.get("plan"),
                   instance=str(data.get("instance") or ""),
                   watermark_format=data.get("watermark_format"))

    def sink_statements(self) -> list[str]:
        """The sink's DDL, after the function its INSERT calls to write ``__wm``."""
        needs = self.rowtime and self.watermark_format == ddl.EPOCH_MS
        return [*([ddl.function_ddl(ddl.WM_TO_MS)] if needs else []), self.sink_ddl]


@dataclass
class CompiledJob:
    """A validated job, ready to submit: its environment holds the declared tables."""

    spec: JobSpec
    columns: list[tuple[str, str]]  # output columns as Flink resolved them (with *ROWTIME*)
    env: Any = field(repr=False, default=None)
    plan: Any = field(repr=False, default=None)  # the Java CompiledPlan of spec.plan

    @property
    def rowtime_columns(self) -> list[str]:
        return [n for n, t in self.columns if t.endswith("*ROWTIME*")]


def _run_statements(env: Any, node: str, statements: Sequence[str]) -> None:
    for stmt in statements:
        try:
            env.execute_sql(stmt)
        except Exception as exc:
            if not _is_java_error(exc):
                raise
            raise SqlError(
                f"node {node!r}: generated DDL was refused: {planner_message(exc)}"
            ) from None


def resolve_columns(env: Any, node: str, query: str) -> list[tuple[str, str]]:
    """Plan ``query`` and return its output columns ``(name, type)``; SqlError if invalid."""
    try:
        table = env.sql_query(query)
    except Exception as exc:
        if not _is_java_error(exc):
            raise
        raise SqlError(f"node {node!r}: {planner_message(exc)}") from None
    schema = table._j_table.getResolvedSchema()
    return [(str(c.getName()), str(c.getDataType().toString())) for c in schema.getColumns()]


def plan_query(spec: JobSpec) -> tuple[Any, list[tuple[str, str]]]:
    """The first half of a compilation: a new environment with the inputs declared, and
    the query's output columns as Flink resolved them (SqlError naming ``spec.node``)."""
    env = table_environment(spec.mode, spec.config)
    _run_statements(env, spec.node, spec.statements)
    return env, resolve_columns(env, spec.node, spec.query)


def validate_insert(env: Any, spec: JobSpec, columns: list[tuple[str, str]]) -> CompiledJob:
    """The second half: declare ``spec.sink_ddl`` and have the whole INSERT optimized.

    A stream job's INSERT is compiled into a plan (``compilePlanSql``: the optimization and
    the translation, once), kept in ``spec.plan`` with stable operator ids (the same query
    gets the same operator uids in any JVM, so a recompiled job still finds its state): its
    submission then only runs the plan, and a resume from a savepoint runs the very same
    plan. A batch job, or a query Flink cannot put in a plan, is optimized by ``explain_sql`` and
    planned again when it is submitted."""
    _run_statements(env, spec.node, spec.sink_statements())
    spec.plan = None
    if spec.mode == "stream":
        try:
            compiled = env._j_tenv.compilePlanSql(spec.insert)
            spec.plan = stable_ids(str(compiled.asJsonString()), sink_salt=spec.instance)
            return CompiledJob(spec, columns, env, plan=_load_plan(env, spec.plan))
        except Exception as exc:
            if not _is_java_error(exc):
                raise
            spec.plan = None
            log.debug("node %s: no compiled plan (%s)", spec.node, planner_message(exc))
    try:
        env.explain_sql(spec.insert)
    except Exception as exc:
        if not _is_java_error(exc):
            raise
        raise SqlError(f"node {spec.node!r}: {planner_message(exc, line_offset=1)}") from None
    return CompiledJob(spec, columns, env)


def _load_plan(env: Any, plan_json: str) -> Any:
    """The Java ``CompiledPlan`` of ``plan_json`` in ``env``."""
    from pyflink.java_gateway import get_gateway

    reference = get_gateway().jvm.org.apache.flink.table.api.PlanReference
    return env._j_tenv.loadPlan(reference.fromJsonString(plan_json))


def compile_job(
    spec: JobSpec,
    sink_ddl_for: Any,
) -> CompiledJob:
    """Declare the inputs, plan the query, declare the sink, optimize the INSERT.

    ``sink_ddl_for(columns, spec)`` returns the sink's DDL for the resolved output columns
    (and may set ``spec.rowtime``). Nothing
    is submitted; a problem raises :class:`SqlError` naming ``spec.node``.
    """
    env, columns = plan_query(spec)
    spec.sink_ddl = sink_ddl_for(columns, spec)
    return validate_insert(env, spec, columns)


def translate(job: CompiledJob) -> str:
    """The stream graph ``job``'s compiled plan becomes (as JSON), without submitting it: what
    a submission runs before it reaches the cluster (the job server warms up with it)."""
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    api = gateway.jvm.org.apache.flink.table.api
    details = gateway.new_array(api.ExplainDetail, 1)
    details[0] = api.ExplainDetail.JSON_EXECUTION_PLAN
    return str(job.plan.explain(api.ExplainFormat.TEXT, details))


def prepare(spec: JobSpec) -> CompiledJob:
    """Re-create a compiled job from a stored spec (resume from a savepoint): its compiled
    plan when it has one, so that the job's operators keep the ids its state is stored by."""
    env = table_environment(spec.mode, spec.config)
    _run_statements(env, spec.node, [*spec.statements, *spec.sink_statements()])
    plan = None
    if spec.plan:
        try:
            plan = _load_plan(env, spec.plan)
        except Exception as exc:
            if not _is_java_error(exc):
                raise
            raise SqlError(f"node {spec.node!r}: its stored plan does not load: "
                           f"{planner_message(exc)}") from None
    return CompiledJob(spec, [], env, plan=plan)


def execute(job: CompiledJob, *, url: str, name: str | None = None) -> str:
    """Run ``job``'s INSERT (Flink submits it to the target in its config); the job id.

    ``url`` names the target in messages. SqlError for SQL Flink refuses now, ClusterError
    when the target does not take the job."""
    spec = job.spec
    # No process-wide lock: each job has an environment of its own, so several submissions
    # (a launch's jobs) run side by side.
    if name:
        job.env.get_config().set("pipeline.name", name)
    try:
        if job.plan is not None:
            return str(job.plan.execute().getJobClient().get().getJobID().toString())
        result = job.env.execute_sql(spec.insert)
    except Exception as exc:
        if not _is_java_error(exc):
            raise
        message = planner_message(exc, line_offset=1)
        if "Connection refused" in str(exc) or "Could not submit job" in str(exc) or (
            "RestClientException" in str(exc)
        ):
            raise ClusterError(
                f"node {spec.node!r}: submission to {url} failed: {message}"
            ) from None
        raise SqlError(f"node {spec.node!r}: {message}") from None
    client = result.get_job_client()
    if client is None:
        raise ClusterError(f"node {spec.node!r}: Flink returned no job client")
    return str(client.get_job_id())


def await_listed(node: str, job_id: str, rest: Any, *, timeout: float = 60.0) -> None:
    """Wait until the cluster behind ``rest`` lists ``job_id``: a job that ran anywhere
    else (an in-process mini cluster) is an error."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while job_id not in rest.job_ids():
        if time.monotonic() > deadline:
            raise ClusterError(
                f"node {node!r}: job {job_id} was submitted but {rest.url} does not list "
                "it (did it run in a local mini cluster?)"
            )
        time.sleep(delay)
        delay = min(0.2, delay * 2)


def submit(job: CompiledJob, rest: Any, *, timeout: float = 60.0,
           name: str | None = None) -> str:
    """Submit ``job`` to the cluster behind ``rest`` (a FlinkRest) from this process; return
    the job id.

    ``name`` is the job's name on the cluster (default: the spec's ``pipeline.name``). The
    id is checked in the cluster's ``GET /jobs``.
    """
    started = time.monotonic()
    job_id = execute(job, url=rest.url, name=name)
    await_listed(job.spec.node, job_id, rest, timeout=timeout)
    log.info("node %s: job %s submitted to %s in %.1f s", job.spec.node, job_id, rest.url,
             time.monotonic() - started)
    return job_id


# ---------------------------------------------------------------- ad-hoc queries
def collect(
    statements: Sequence[str],
    query: str,
    *,
    limit: int,
    mode: Mode = "batch",
    conf: Mapping[str, str] | None = None,
    name: str = "query",
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a bounded query in this process (a local mini cluster); return columns and rows.

    Used for ad-hoc SQL over flow tables: it does not take slots from the experiments'
    cluster and needs no cluster at all.
    """
    settings = {**LOCAL_EXECUTION, "parallelism.default": "1",
                "pipeline.name": f"ultron {name}"}
    settings.update(conf or {})
    env = table_environment(mode, settings)
    _run_statements(env, name, statements)
    columns = [n for n, _ in resolve_columns(env, name, query)]
    wrapped = f"SELECT * FROM (\n{query}\n) LIMIT {int(limit)}"
    rows: list[tuple[Any, ...]] = []
    with _LOCK:
        try:
            result = env.execute_sql(wrapped)
            with result.collect() as results:
                for row in results:
                    rows.append(tuple(row))
                    if len(rows) >= limit:
                        break
        except Exception as exc:
            if not _is_java_error(exc):
                raise
            raise SqlError(f"{name}: {planner_message(exc, line_offset=1)}") from None
    return columns, rows


# ---------------------------------------------------------------- streaming queries
_CHANGELOG_MODE = re.compile(r"changelogMode=\[([^\]]*)\]")


class StreamingQuery:
    """A streaming query running in this process (a local mini cluster of its own): its
    rows with their changelog kind, until :meth:`cancel`.

    Iterating blocks until rows come: do it in one thread, and cancel from another. The
    mini cluster exists for this one job, so cancelling the job ends all the work it does
    (its sources stop reading) and shuts the mini cluster down.
    """

    def __init__(self, env: Any, result: Any, columns: list[str], changes: list[str],
                 name: str):
        self.columns = columns
        self.changes = changes  # the result's changelog kinds: ["I"] or ["I", "UB", "UA", "D"]
        self.name = name
        self._env = env
        self._result = result
        self._client = result.get_job_client()
        self.job_id = str(self._client.get_job_id()) if self._client is not None else ""
        self._iterator = result.collect()
        self._cancelled = False

    @property
    def insert_only(self) -> bool:
        """Does the result only ever append rows?"""
        return set(self.changes) <= {"I"}

    def __iter__(self) -> Any:
        """``(kind, values)`` per row, kind one of ``+I``, ``-U``, ``+U``, ``-D``."""
        try:
            for row in self._iterator:
                yield str(row.get_row_kind()), tuple(row)
        except Exception as exc:
            if self._cancelled:
                return  # the fetch a cancel interrupted
            if not _is_java_error(exc):
                raise
            raise SqlError(f"{self.name}: {planner_message(exc)}") from None

    def cancel(self) -> None:
        """Cancel the job (by its id, through its client) and close the result iterator."""
        if self._cancelled:
            return
        self._cancelled = True
        try:
            if self._client is not None:
                self._client.cancel().result()
        except Exception as exc:  # already ended: nothing to cancel
            log.debug("%s: cancel of job %s: %s", self.name, self.job_id, exc)
        try:
            self._iterator.close()
        except Exception as exc:
            log.debug("%s: closing the result of job %s: %s", self.name, self.job_id, exc)

    def outcome(self) -> str:
        """How the job ended (waits for it): ``canceled``, ``finished``, ``failed: ...``."""
        if self._client is None:
            return "unknown"
        try:
            self._client.get_job_execution_result().result()
        except Exception as exc:
            text = str(exc)
            if "JobCancellationException" in text:
                return "canceled"
            return f"failed: {planner_message(exc)}"
        return "finished"


def stream_query(statements: Sequence[str], query: str, *, conf: Mapping[str, str] | None = None,
                 name: str = "follow") -> StreamingQuery:
    """Start streaming query ``query`` in this process (after ``statements`` declare its
    tables); its rows come with their changelog kinds as they are produced."""
    settings = {"parallelism.default": "1", "pipeline.name": f"ultron {name}"}
    settings.update(conf or {})
    env = table_environment("stream", settings)
    _run_statements(env, name, statements)
    columns = [n for n, _ in resolve_columns(env, name, query)]
    with _LOCK:
        try:
            from pyflink.table import ExplainDetail

            plan = env.explain_sql(query, ExplainDetail.CHANGELOG_MODE)
            result = env.execute_sql(query)
        except Exception as exc:
            if not _is_java_error(exc):
                raise
            raise SqlError(f"{name}: {planner_message(exc)}") from None
    return StreamingQuery(env, result, columns, changelog_kinds(plan), name)


def changelog_kinds(plan: str) -> list[str]:
    """The changelog kinds of a query's result, from its ``CHANGELOG_MODE`` explanation (the
    root of the optimized physical plan); ``["I"]`` when the plan does not say."""
    section = plan.split("== Optimized Physical Plan ==", 1)[-1]
    m = _CHANGELOG_MODE.search(section)
    return [k.strip() for k in m.group(1).split(",") if k.strip()] if m else ["I"]
