"""A small client for Flink's REST API, for the local cluster and remote ones alike.

Every request goes through :meth:`FlinkRest.request`, which turns transport failures into a
:class:`~ultron_nb.errors.ClusterError` naming the URL, a 404 on a job into
:class:`~ultron_nb.errors.NotFoundError`, and Flink's error bodies into one readable line; a
server that is not Flink (an HTML page, an empty answer) is said to be one, never pasted.

Credentials: a URL's ``user:password@`` becomes HTTP Basic authentication and leaves the
URL, so :attr:`FlinkRest.url` — which every message, log line and stored target uses — never
carries them. :func:`rest_client` gives a client of a (stored, credential-free) target the
credentials the user configured for the same server (``flink_url``), or those a URL of this
process gave for it before.
"""

from __future__ import annotations

import functools
import logging
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ultron_nb.config import Settings
from ultron_nb.errors import ClusterError, JobFailedError, NotFoundError
from ultron_nb.urls import endpoint, split_credentials

log = logging.getLogger(__name__)

#: Flink reports "no watermark yet" as Long.MIN_VALUE.
NO_WATERMARK = -(2**63)

_OPERATOR_INPUT_WM = re.compile(r"^(?P<subtask>\d+)\.(?P<op>.+)\.currentInputWatermark$")
#: Rows into a sink writer (``StreamingFileWriter``, ``<sink>: Writer``), not into the
#: ``end: Writer`` that only takes the committer's messages.
_WRITER_ROWS = re.compile(r"^(?P<subtask>\d+)\.(?P<op>(?!end_)[^.]*Writer[^.]*)\.numRecordsIn$")

#: Job states after which a job does not run again (lower case).
TERMINAL_STATES = frozenset({"finished", "failed", "canceled", "suspended"})
#: How Flink refuses a checkpoint or savepoint while a task of the job is not running.
_TASKS_NOT_RUNNING = ("Not all required tasks are currently running",
                      "is not being executed at the moment")
#: Job states whose tasks will run (a savepoint refused then is asked again).
_ON_ITS_WAY = frozenset({"created", "initializing", "running", "restarting"})


class _JobFacts:
    """What never changes about a job while it exists (its plan's last vertices, the metric
    names of its sink writers), kept across clients: a status asks each job of a chain for
    its watermark every few seconds, and two of the five calls that took were these.
    Keyed by cluster and job id (ids are random and never reused); bounded, least recently
    used first out; thread-safe (a status asks its nodes side by side)."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._items: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, ...], value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._items.pop(key, None)


_FACTS = _JobFacts()


@functools.lru_cache(maxsize=8)
def _tls_context(verify: bool | str) -> ssl.SSLContext:
    """One TLS context per ``verify`` setting, shared by every client: building one loads the
    CA bundle (about 70 ms), which each status call would otherwise pay again."""
    return httpx.create_ssl_context(verify=verify)


@dataclass(frozen=True)
class JobInfo:
    """One job as Flink reports it (state in lower case)."""

    id: str
    name: str
    state: str
    start_time: float | None = None  # seconds since the epoch
    end_time: float | None = None
    vertices: list[dict[str, Any]] = field(default_factory=list)
    restarting_ms: int | None = None  # when it last began restarting (epoch ms)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobInfo:
        def seconds(value: Any) -> float | None:
            return value / 1000.0 if isinstance(value, int | float) and value > 0 else None

        return cls(
            id=str(data.get("jid") or data.get("id")),
            name=str(data.get("name", "")),
            state=str(data.get("state") or data.get("status") or "unknown").lower(),
            start_time=seconds(data.get("start-time")),
            end_time=seconds(data.get("end-time")),
            vertices=list(data.get("vertices", [])),
            restarting_ms=int((data.get("timestamps") or {}).get("RESTARTING") or 0) or None,
        )


@dataclass(frozen=True)
class RestoredCheckpoint:
    """The checkpoint (or savepoint) a job last restored (times in epoch ms)."""

    id: int
    restored_ms: int
    acked_ms: int | None  # its last acknowledgement; None once Flink's history dropped it
    path: str
    savepoint: bool


#: Credentials URLs of this process gave per endpoint (see :func:`credentials_for`).
_CREDENTIALS: dict[tuple[str, str, int], tuple[str, str]] = {}

Credentials = tuple[str, str]


def credentials_for(url: str, configured: str = "") -> Credentials | None:
    """The credentials to use for ``url``: its own; else those of ``configured`` (the
    ``flink_url`` setting) when it names the same server; else those a URL of this process
    gave for that server."""
    _, own = split_credentials(url)
    if own is not None:
        return own
    if configured:
        _, theirs = split_credentials(configured)
        if theirs is not None and endpoint(configured) == endpoint(url):
            return theirs
    return _CREDENTIALS.get(endpoint(url))


def remember_credentials(url: str) -> str:
    """Keep the credentials of ``url`` (if any) for later clients of its server in this
    process; ``url`` without them."""
    clean, given = split_credentials(url)
    if given is not None:
        _CREDENTIALS[endpoint(clean)] = given
    return clean


def submission_headers(settings: Settings, target: str | None = None) -> dict[str, str]:
    """The headers Flink's REST client sends when it submits a job to ``target`` (default:
    the configured cluster): the configured ones and the credentials for that cluster
    (:func:`credentials_for`)."""
    return {**settings.flink_headers,
            **basic_auth_header(credentials_for(target or settings.target_url,
                                                settings.flink_url))}


def basic_auth_header(credentials: Credentials | None) -> dict[str, str]:
    """The ``Authorization`` header of HTTP Basic authentication (empty without)."""
    if credentials is None:
        return {}
    import base64

    token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def rest_client(settings: Settings, url: str, **kwargs: Any) -> FlinkRest:
    """A client of the cluster at ``url`` with the configured headers, TLS setting and
    credentials (:func:`credentials_for`)."""
    return FlinkRest(url, headers=settings.flink_headers, verify=settings.flink_verify,
                     auth=credentials_for(url, settings.flink_url), **kwargs)


def _not_flink(response: httpx.Response) -> str:
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    what = f"a {kind} page" if kind else ("an empty answer" if not response.content
                                          else "an answer that is not JSON")
    return f"it answered {what}, not Flink's JSON: is this a Flink REST endpoint?"


def _flink_errors(response: httpx.Response) -> str:
    """The useful part of a Flink error body ({"errors": [...]}), one line."""
    try:
        body = response.json()
    except ValueError:
        return _not_flink(response)
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return " ".join(str(body).split())[:300]
    text = str(errors[0])
    # Flink puts a whole stack trace into the first error; keep the most specific line.
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln for ln in lines if ln.startswith("Caused by:")]
    best = causes[-1][len("Caused by:"):].strip() if causes else lines[0] if lines else text
    return best[:500]


def _is_json(response: httpx.Response) -> bool:
    try:
        response.json()
    except ValueError:
        return False
    return True


def root_cause_line(stacktrace: str) -> str:
    """The deepest ``Caused by`` of a Java stack trace, without the exception's package."""
    lines = [ln.strip() for ln in stacktrace.splitlines() if ln.strip()]
    if not lines:
        return ""
    causes = [ln[len("Caused by:"):].strip() for ln in lines if ln.startswith("Caused by:")]
    line = causes[-1] if causes else lines[0]
    # org.apache.flink.FooException: message -> FooException: message
    return re.sub(r"^(?:[a-z_][\w$]*\.)+(?=[A-Z])", "", line)


class FlinkRest:
    """Talk to one Flink cluster through its REST API.

    ``url`` is the REST endpoint (``http://127.0.0.1:8081``, ``https://flink.example.com/x``);
    ``headers`` are sent with every request (authentication); ``verify`` is httpx's TLS
    setting (True, False or a CA bundle path).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
        timeout: float = 10.0,
        auth: Credentials | None = None,
    ):
        clean, given = split_credentials(url)
        self.url = remember_credentials(url).rstrip("/")
        self.headers = dict(headers or {})
        self.verify = verify
        credentials = auth or given or _CREDENTIALS.get(endpoint(clean))
        self.authenticated = credentials is not None
        self._client = httpx.Client(
            base_url=self.url, headers=self.headers, verify=_tls_context(verify),
            timeout=timeout, auth=httpx.BasicAuth(*credentials) if credentials else None,
        )
        self._writer_metrics: dict[str, list[tuple[str, list[str]]]] = {}

    def __repr__(self) -> str:
        return f"<FlinkRest {self.url}>"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> FlinkRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- transport
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        job: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body (None when empty)."""
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        try:
            response = self._client.request(method, path, json=json, params=params, **extra)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ClusterError(f"cannot reach Flink at {self.url}: {reason}") from None
        if response.status_code == 404 and job is not None and _is_json(response):
            raise NotFoundError(f"Flink at {self.url} has no job {job}")
        if response.status_code in (401, 403):
            hint = ("its credentials were refused" if self.authenticated else
                    "it needs credentials: give them in flink_url "
                    "(ULTRON_FLINK_URL=http://USER:PASSWORD@host:port)")
            raise ClusterError(f"Flink at {self.url} refused {method} {path} "
                               f"({response.status_code}): {hint}")
        if response.status_code >= 400:
            raise ClusterError(
                f"Flink at {self.url} refused {method} {path} "
                f"({response.status_code}): {_flink_errors(response)}"
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClusterError(f"{self.url}{path}: {_not_flink(response)}") from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def get_object(self, path: str, method: str = "GET", **kwargs: Any) -> dict[str, Any]:
        """A request whose answer must be a JSON object (what Flink answers)."""
        body = self.request(method, path, **kwargs)
        if not isinstance(body, dict):
            what = "nothing" if body is None else f"a JSON {type(body).__name__}"
            raise ClusterError(f"{self.url}{path} answered {what}, not Flink's JSON object: "
                               "is this a Flink REST endpoint?")
        return body

    # ---------------------------------------------------------------- cluster
    def overview(self) -> dict[str, Any]:
        """``GET /overview``: task managers, slots, job counts, Flink version."""
        return self.get_object("/overview")

    def jobs_overview(self) -> list[dict[str, str]]:
        """``GET /jobs/overview``: each job's ``jid``, ``name`` and ``state`` (lower case)."""
        body = self.get_object("/jobs/overview")
        return [{"jid": str(j.get("jid")), "name": str(j.get("name", "")),
                 "state": str(j.get("state", "")).lower()} for j in body.get("jobs", [])]

    def reachable(self, timeout: float = 2.0) -> bool:
        """Does a Flink REST endpoint answer at this URL?"""
        try:
            self.request("GET", "/overview", timeout=timeout)
        except ClusterError:
            return False
        return True

    def web_url(self, job_id: str | None = None) -> str:
        """The web UI link of the cluster or of one job."""
        if job_id is None:
            return f"{self.url}/#/overview"
        return f"{self.url}/#/job/running/{job_id}/overview"

    # ---------------------------------------------------------------- jobs
    def job_ids(self) -> dict[str, str]:
        """``GET /jobs``: every job id the cluster knows, with its state (lower case)."""
        body = self.get_object("/jobs")
        return {j["id"]: str(j["status"]).lower() for j in body.get("jobs", [])}

    def jobs(self) -> list[JobInfo]:
        """``GET /jobs/overview``: every job with name and state, newest first."""
        body = self.get_object("/jobs/overview")
        items = [JobInfo.from_json(j) for j in body.get("jobs", [])]
        return sorted(items, key=lambda j: j.start_time or 0.0, reverse=True)

    def job(self, job_id: str) -> JobInfo:
        """``GET /jobs/<id>``: state, times and vertices of one job."""
        return JobInfo.from_json(self.get_object(f"/jobs/{job_id}", job=job_id))

    def job_state(self, job_id: str) -> str:
        return self.job(job_id).state

    def root_cause(self, job_id: str) -> str | None:
        """The root cause of the job's latest failure (one line), or None."""
        body = self.get_object(f"/jobs/{job_id}/exceptions", params={"maxExceptions": 1},
                               job=job_id)
        entries = (body.get("exceptionHistory") or {}).get("entries") or []
        if entries:
            entry = entries[0]
            line = root_cause_line(entry.get("stacktrace") or "")
            return line or entry.get("exceptionName")
        root = body.get("root-exception")  # Flink 1.x
        return root_cause_line(root) if root else None

    def restored_checkpoint(self, job_id: str) -> RestoredCheckpoint | None:
        """The checkpoint the job last restarted from, or None when it never restored
        one."""
        body = self.get_object(f"/jobs/{job_id}/checkpoints", job=job_id)
        restored = (body.get("latest") or {}).get("restored") or {}
        if not restored.get("id") or not restored.get("restore_timestamp"):
            return None
        checkpoint = int(restored["id"])
        acked: int | None = None
        for entry in body.get("history") or []:
            if entry.get("id") == checkpoint and entry.get("latest_ack_timestamp"):
                acked = int(entry["latest_ack_timestamp"])
        if acked is None:
            try:
                details = self.get_object(f"/jobs/{job_id}/checkpoints/details/{checkpoint}",
                                          job=job_id)
                acked = int(details.get("latest_ack_timestamp") or 0) or None
            except NotFoundError:
                acked = None
        return RestoredCheckpoint(checkpoint, int(restored["restore_timestamp"]), acked,
                                  str(restored.get("external_path") or ""),
                                  bool(restored.get("is_savepoint")))

    def cancel(self, job_id: str) -> None:
        """``PATCH /jobs/<id>?mode=cancel``."""
        self.request("PATCH", f"/jobs/{job_id}", params={"mode": "cancel"}, job=job_id)

    def trigger_savepoint(
        self, job_id: str, target_directory: str | None = None, *, cancel: bool = False
    ) -> str:
        """``POST /jobs/<id>/savepoints``; returns the trigger id."""
        body: dict[str, Any] = {"cancel-job": cancel}
        if target_directory:
            body["target-directory"] = target_directory
        answer = self.get_object(f"/jobs/{job_id}/savepoints", "POST", json=body, job=job_id)
        return str(answer["request-id"])

    def trigger_stop(
        self, job_id: str, target_directory: str | None = None, *, drain: bool = False
    ) -> str:
        """``POST /jobs/<id>/stop`` (stop with savepoint); returns the trigger id."""
        body: dict[str, Any] = {"drain": drain}
        if target_directory:
            body["targetDirectory"] = target_directory
        answer = self.get_object(f"/jobs/{job_id}/stop", "POST", json=body, job=job_id)
        return str(answer["request-id"])

    def await_savepoint(self, job_id: str, trigger_id: str, timeout: float = 120.0) -> str:
        """Wait for a savepoint (or stop-with-savepoint) to complete; return its location."""
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            body = self.get_object(f"/jobs/{job_id}/savepoints/{trigger_id}", job=job_id)
            if (body.get("status") or {}).get("id") == "COMPLETED":
                op = body.get("operation") or {}
                if "location" in op:
                    return str(op["location"])
                cause = op.get("failure-cause") or {}
                trace = cause.get("stack-trace") or cause.get("serialized-throwable") or ""
                raise JobFailedError(
                    f"savepoint of job {job_id} failed: {root_cause_line(str(trace)) or cause}"
                )
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"savepoint of job {job_id} did not complete within {timeout:.0f} s"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def savepoint(self, job_id: str, target_directory: str | None = None,
                  timeout: float = 120.0) -> str:
        """Take a savepoint of a running job; return its location."""
        return self._once_tasks_run(
            job_id, lambda: self.trigger_savepoint(job_id, target_directory), timeout)

    def stop_with_savepoint(self, job_id: str, target_directory: str | None = None,
                            timeout: float = 120.0) -> str:
        """Stop a job with a savepoint; return the savepoint's location."""
        return self._once_tasks_run(
            job_id, lambda: self.trigger_stop(job_id, target_directory), timeout)

    def _once_tasks_run(self, job_id: str, trigger: Callable[[], str], timeout: float) -> str:
        """Trigger a savepoint and wait for it; while Flink refuses it because a task of the
        running job is not running yet (just deployed, restoring its state, restarted in a
        region), trigger it again, within ``timeout``. A stop refused so leaves the job
        running, so nothing is lost by asking again."""
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            try:
                return self.await_savepoint(job_id, trigger(),
                                            max(1.0, deadline - time.monotonic()))
            except JobFailedError as exc:
                if (not any(m in str(exc) for m in _TASKS_NOT_RUNNING)
                        or time.monotonic() + delay > deadline
                        or self.job_state(job_id) not in _ON_ITS_WAY):
                    raise
                log.info("job %s: a task is not running yet; the savepoint is asked again",
                         job_id)
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def await_state(
        self, job_id: str, states: set[str] | frozenset[str], timeout: float = 60.0
    ) -> str:
        """Poll until the job is in one of ``states`` (lower case); return that state.

        Raises :class:`~ultron_nb.errors.JobFailedError` with the root cause when the job
        fails instead, and :class:`~ultron_nb.errors.ClusterError` on timeout.
        """
        deadline = time.monotonic() + timeout
        delay = 0.1
        state = "unknown"
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in states:
                return state
            if state == "failed":
                raise JobFailedError(f"job {job_id} failed: {self.root_cause(job_id)}")
            if state in TERMINAL_STATES:
                break
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        raise ClusterError(
            f"job {job_id} is {state}, not {'/'.join(sorted(states))}, after {timeout:.0f} s"
        )

    # ---------------------------------------------------------------- watermarks
    def plan(self, job_id: str) -> list[dict[str, Any]]:
        """The job graph's nodes (``GET /jobs/<id>/plan``), each with its ``inputs``."""
        body = self.get_object(f"/jobs/{job_id}/plan", job=job_id)
        return list((body.get("plan") or {}).get("nodes", []))

    def _plan_nodes(self, job_id: str) -> list[dict[str, Any]]:
        """:meth:`plan`, asked once per job (a job's plan never changes)."""
        key = (self.url, job_id, "plan")
        known = _FACTS.get(key)
        if known is None:
            known = self.plan(job_id)
            if known:
                _FACTS.put(key, known)
        return list(known)

    def sink_vertices(self, job_id: str) -> list[str]:
        """Vertex ids that feed no other vertex (the job's last stage)."""
        nodes = self._plan_nodes(job_id)
        fed = {i["id"] for n in nodes for i in n.get("inputs", [])}
        return [n["id"] for n in nodes if n["id"] not in fed]

    def vertex_watermarks(self, job_id: str, vertex_id: str) -> list[int | None]:
        """Each subtask's current input watermark (ms) of one vertex; None means none yet."""
        body = self.get(f"/jobs/{job_id}/vertices/{vertex_id}/watermarks", job=job_id)
        out: list[int | None] = []
        for item in body or []:
            try:
                value = int(float(item["value"]))
            except (KeyError, TypeError, ValueError):
                continue
            out.append(None if value <= NO_WATERMARK + 1 else value)
        return out

    def _metric_values(self, job_id: str, vertex_id: str, names: Sequence[str],
                       ) -> dict[str, int | None]:
        path = f"/jobs/{job_id}/vertices/{vertex_id}/metrics"
        values = self.get(path, params={"get": ",".join(names)}, job=job_id) or []
        out: dict[str, int | None] = {}
        for item in values:
            try:
                value = int(float(item["value"]))
            except (KeyError, TypeError, ValueError):
                continue
            out[str(item["id"])] = None if value <= NO_WATERMARK + 1 else value
        return out

    def output_watermark(self, job_id: str, vertex_id: str) -> list[int | None] | None:
        """Per subtask, the watermark entering the vertex's sink writer — what the job's
        output is complete up to. ``[None]`` while the cluster has reported no operator
        metrics of the vertex yet; None when it has, and the vertex has no writer."""
        key = (self.url, job_id, "writer-watermarks", vertex_id)
        wanted: dict[str, list[str]] | None = _FACTS.get(key)
        if wanted is None:
            path = f"/jobs/{job_id}/vertices/{vertex_id}/metrics"
            names = [str(m["id"]) for m in self.get(path, job=job_id) or []]
            wanted = {}
            operators = False
            for name in names:
                m = _OPERATOR_INPUT_WM.match(name)
                operators = operators or m is not None
                if m and ("Writer" in m["op"] or m["op"].startswith("Sink")):
                    wanted.setdefault(m["subtask"], []).append(name)
            if not wanted:
                # The metric store fills in a while after the job starts, and the vertex's
                # input watermark may be reported before its writer's: for an interval join
                # that is ahead of the output by the join window. Unknown, not the input.
                return None if operators else [None]
            parallelism = next((int(n.get("parallelism") or 0) for n in
                                self._plan_nodes(job_id) if n.get("id") == vertex_id), 0)
            if len(wanted) == parallelism:  # every subtask's writer has reported: kept
                _FACTS.put(key, wanted)
        asked = [n for ns in wanted.values() for n in ns]
        values = self._metric_values(job_id, vertex_id, asked)
        if any(n not in values for n in asked):  # names it no longer has: listed afresh next
            _FACTS.drop(key)
        out: list[int | None] = []
        for subtask in sorted(wanted, key=int):
            found = [values.get(n) for n in wanted[subtask]]
            known = [v for v in found if v is not None]
            # Later operators of the chain may not forward watermarks: take the furthest.
            out.append(max(known) if known else None)
        return out

    def job_watermark(self, job_id: str) -> int | None:
        """How far the job's output is complete in event time (ms since the epoch).

        Read at the sink writer of each last vertex (after operators such as interval joins
        that hold the watermark back), minimum over subtasks; the vertex input watermark
        when there is no writer. None while no watermark has arrived.
        """
        values: list[int | None] = []
        for vertex in self.sink_vertices(job_id):
            marks = self.output_watermark(job_id, vertex)
            if marks is None:
                marks = self.vertex_watermarks(job_id, vertex)
            values.extend(marks)
        if not values or any(v is None for v in values):
            return None
        return min(v for v in values if v is not None)

    def vertex_records(self, job_id: str) -> dict[str, dict[str, int]]:
        """Records read/written per vertex name (from the job detail)."""
        info = self.job(job_id)
        out: dict[str, dict[str, int]] = {}
        for vertex in info.vertices:
            metrics = vertex.get("metrics") or {}
            out[str(vertex.get("name"))] = {
                "read": int(metrics.get("read-records", 0)),
                "written": int(metrics.get("write-records", 0)),
            }
        return out

    # ---------------------------------------------------------------- output rows
    def _writers(self, job_id: str) -> list[tuple[str, list[str]]]:
        """(sink vertex, its writers' ``numRecordsIn`` metric names), cached per job once the
        metric store has them."""
        cached = self._writer_metrics.get(job_id)
        if cached is not None:
            return cached
        found: list[tuple[str, list[str]]] = []
        for vertex in self.sink_vertices(job_id):
            path = f"/jobs/{job_id}/vertices/{vertex}/metrics"
            names = [str(m["id"]) for m in self.get(path, job=job_id) or []]
            found.append((vertex, [n for n in names if _WRITER_ROWS.match(n)]))
        if found and all(names for _, names in found):
            if len(self._writer_metrics) > 256:
                self._writer_metrics.clear()
            self._writer_metrics[job_id] = found
        return found

    def output_rows(self, job_id: str) -> tuple[int | None, float | None]:
        """Rows the job's sink writers have taken so far, and how many per second (Flink's
        own meter, a moving average), summed over subtasks; ``(None, None)`` while the
        cluster has reported no writer metrics yet (its metric store fills in a while after
        the job starts)."""
        rows = 0
        rate = 0.0
        seen = False
        for vertex, names in self._writers(job_id):
            if not names:
                continue
            wanted = names + [n + "PerSecond" for n in names]
            path = f"/jobs/{job_id}/vertices/{vertex}/metrics"
            for item in self.get(path, params={"get": ",".join(wanted)}, job=job_id) or []:
                try:
                    value = float(item["value"])
                except (KeyError, TypeError, ValueError):
                    continue
                seen = True
                if str(item["id"]).endswith("PerSecond"):
                    rate += value
                else:
                    rows += int(value)
        return (rows, round(rate, 3)) if seen else (None, None)

