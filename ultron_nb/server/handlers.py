"""The HTTP handlers of the side panel's API: parse the request, make one library call,
answer JSON.

Every handler is a Jupyter ``APIHandler`` with ``@tornado.web.authenticated`` on every method
(token, or login cookie plus ``X-XSRFToken``). Errors are mapped once, in
:meth:`UltronHandler.write_error`: a domain error answers 4xx/5xx ``{"error": "Type: message"}``
(never a traceback, never HTML), a timeout answers 504 naming what does not answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from ultron_nb.server import api
from ultron_nb.server import serialize as js
from ultron_nb.server.state import STATE_KEY, Busy, PanelState, Timeout

_NAME = r"(?P<{}>[^/]+)"


def status_of(exc: BaseException) -> int:
    """The HTTP status of a domain error: 4xx when the caller is at fault."""
    if isinstance(exc, api.NotFoundError):
        return 404
    if isinstance(exc, api.FlowError | api.ConfigError | api.DataError | api.SqlError):
        return 400
    if isinstance(exc, api.JobFailedError):
        return 409
    if isinstance(exc, api.ClusterError | api.StoreError):
        return 503
    if isinstance(exc, api.EngineError):
        return 502
    return 400


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class ApiError(web.HTTPError):
    """An answer with a status and a one-line ``{"error": ...}`` body."""

    def __init__(self, status: int, message: str):
        super().__init__(status)
        self.message = one_line(message)


class UltronHandler(APIHandler):
    """Base of every handler: runs library calls off the event loop, maps errors once."""

    @property
    def panel(self) -> PanelState:
        return self.settings[STATE_KEY]  # type: ignore[no-any-return]

    # ---------------------------------------------------------------- calls
    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A store-only call (listings): never waits for Flink."""
        try:
            return await self.panel.run(fn, *args, flink=False,
                                        timeout=self.panel.config.read_timeout)
        except Timeout as exc:
            raise ApiError(504, f"TimeoutError: the metadata store: {exc}") from None
        except api.UltronError as exc:
            raise self._domain(exc) from None

    async def models(self, fn: Callable[..., Any], *args: Any,
                     promote: str | None = None) -> Any:
        """A model-center call (MLflow's store, not ultron's): in the pool of slow calls;
        ``promote``: an action on that model, one at a time."""
        try:
            if promote is not None:
                return await self.panel.act_on_model(promote, fn, *args)
            return await self.panel.run(fn, *args, flink=True,
                                        timeout=self.panel.config.model_timeout)
        except Busy as exc:
            raise ApiError(409, f"ConflictError: {exc}") from None
        except Timeout as exc:
            raise ApiError(504, f"TimeoutError: the model center (MLflow): {exc}") from None
        except api.UltronError as exc:
            raise self._domain(exc) from None

    async def live_status(self, experiment: str) -> tuple[Any, float]:
        """An experiment's live status (asked from its Flink cluster, kept fresh by the
        server while panels look at it) and when it was asked."""
        try:
            return await self.panel.status(experiment)
        except Timeout as exc:
            raise await self._no_answer(experiment, exc) from None
        except api.UltronError as exc:
            raise self._domain(exc) from None

    async def act(self, experiment: str, what: str, fn: Callable[..., Any], *args: Any,
                  **kwargs: Any) -> Any:
        """An action on an experiment (stop, resume, restart, clone)."""
        try:
            return await self.panel.act(experiment, fn, *args, **kwargs)
        except Busy as exc:
            raise ApiError(409, f"ConflictError: {exc}") from None
        except Timeout as exc:
            err = await self._no_answer(experiment, exc)
            raise ApiError(504, f"{err.message}; the {what} goes on in the server: "
                                "refresh to see its state") from None
        except api.UltronError as exc:
            raise self._domain(exc) from None

    def _domain(self, exc: api.UltronError) -> ApiError:
        return ApiError(status_of(exc), f"{type(exc).__name__}: {exc}")

    async def _no_answer(self, experiment: str | None, exc: Exception) -> ApiError:
        target = "the configured URL"
        if experiment is not None:
            try:
                target = await self.panel.run(api.experiment_target, experiment, flink=False,
                                              timeout=self.panel.config.read_timeout)
            except Exception:  # the message stays useful without the target
                pass
        return ApiError(504, f"TimeoutError: Flink cluster at {target} does not answer ({exc})")

    # ---------------------------------------------------------------- replies
    def reply(self, payload: Any) -> None:
        self.finish(json.dumps(js.scrub(payload), default=str))

    def body(self) -> dict[str, Any]:
        """The JSON object sent (``{}`` when the body is empty)."""
        raw = self.request.body
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise ApiError(400, "ValueError: the request body is not JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "ValueError: the request body must be a JSON object")
        return data

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = (kwargs.get("exc_info") or (None, None, None))[1]
        if isinstance(exc, ApiError):
            message = exc.message
        elif isinstance(exc, web.HTTPError):
            message = f"HTTPError: {exc.log_message or self._reason}"
        else:  # a bug: the traceback is in the server's log, not in the answer
            message = f"{type(exc).__name__}: internal error in ultron_nb (see the server log)"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": js.mask_text(message)}))


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"ValueError: {name!r} must be true or false, not {value!r}")
    return value


def _text(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"ValueError: {name!r} is required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"ValueError: {name!r} must be a string")
    return value


def _overrides(body: dict[str, Any]) -> dict[str, str]:
    value = body.get("set") or {}
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ApiError(400, "ValueError: 'set' must list NODE.PARAM=V strings")
        try:
            return api.parse_overrides(value)
        except api.UltronError as exc:
            raise ApiError(400, f"{type(exc).__name__}: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "ValueError: 'set' must map NODE.PARAM to a value")
    return {str(k): str(v) for k, v in value.items()}


def _savepoint_ids(body: dict[str, Any]) -> list[int]:
    value = body.get("from_savepoints") or []
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ApiError(400, "ValueError: 'from_savepoints' must list savepoint ids")
    return list(value)


# ---------------------------------------------------------------- reads
class InfoHandler(UltronHandler):
    @web.authenticated
    async def get(self) -> None:
        self.reply(await self.read(api.info))


class FlowsHandler(UltronHandler):
    @web.authenticated
    async def get(self) -> None:
        self.reply([js.flow_summary(f) for f in await self.read(api.flows)])


class FlowHandler(UltronHandler):
    @web.authenticated
    async def get(self, name: str) -> None:
        self.reply(js.flow(*await self.read(api.flow, name)))


class DagHandler(UltronHandler):
    @web.authenticated
    async def get(self, name: str) -> None:
        experiment = (self.get_query_argument("experiment", None)
                      or await self.read(api.latest_experiment, name))
        st = None
        if experiment:
            self.panel.watch_dag(experiment, name)
            st = (await self.live_status(experiment))[0]
        svg = await self.read(api.dag_svg, name, st)
        self.finish(svg, set_content_type="image/svg+xml")


class ExperimentsHandler(UltronHandler):
    @web.authenticated
    async def get(self) -> None:
        flow = self.get_query_argument("flow", None) or None
        self.reply([js.experiment_row(e) for e in await self.read(api.experiments, flow)])


class ExperimentHandler(UltronHandler):
    @web.authenticated
    async def get(self, name: str) -> None:
        st, as_of = await self.live_status(name)
        self.reply({**js.experiment_status(st), "as_of": as_of})


class SavepointsHandler(UltronHandler):
    @web.authenticated
    async def get(self, name: str) -> None:
        self.reply([js.savepoint_choice(c) for c in await self.read(api.savepoints, name)])


class QualityHandler(UltronHandler):
    @web.authenticated
    async def get(self, name: str) -> None:
        self.reply(js.quality_report(await self.read(api.quality, name)))


class DiffHandler(UltronHandler):
    @web.authenticated
    async def get(self, name: str, other: str) -> None:
        self.reply(js.experiment_diff(await self.read(api.diff, name, other)))


class EventsHandler(UltronHandler):
    @web.authenticated
    async def get(self) -> None:
        key = self.get_query_argument("key", None) or None
        raw = self.get_query_argument("limit", "50")
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            raise ApiError(400, f"ValueError: limit must be an integer from 1 to 1000, "
                                f"not {raw!r}")
        self.reply([js.event(e) for e in await self.read(api.events, key, limit)])


# ---------------------------------------------------------------- actions
class StopHandler(UltronHandler):
    @web.authenticated
    async def post(self, name: str) -> None:
        savepoint = _flag(self.body(), "savepoint", False)
        st = await self.act(name, "stop", api.stop, name, savepoint)
        self.reply(js.experiment_status(st))


class ResumeHandler(UltronHandler):
    @web.authenticated
    async def post(self, name: str) -> None:
        self.body()
        self.reply(js.experiment_status(await self.act(name, "resume", api.resume, name)))


class RestartHandler(UltronHandler):
    @web.authenticated
    async def post(self, name: str, node: str) -> None:
        from_savepoint = _flag(self.body(), "from_savepoint", False)
        st = await self.act(name, "restart", api.restart_node, name, node, from_savepoint)
        self.reply(js.experiment_status(st))


class CloneHandler(UltronHandler):
    @web.authenticated
    async def post(self, name: str) -> None:
        body = self.body()
        new = _text(body, "name", required=True)
        label = _text(body, "label", required=False)
        dry_run = _flag(body, "dry_run", True)
        result = await self.act(name, "clone", api.clone, name, new, _overrides(body),
                                dry_run=dry_run, label=label,
                                from_savepoints=_savepoint_ids(body))
        self.reply(js.clone_result(result))


# ---------------------------------------------------------------- model center
class ModelsHandler(UltronHandler):
    @web.authenticated
    async def get(self) -> None:
        self.reply(await self.models(api.models))


class ModelVersionsHandler(UltronHandler):
    @web.authenticated
    async def get(self, name: str) -> None:
        self.reply(await self.models(api.model_versions, name))


class PromoteHandler(UltronHandler):
    @web.authenticated
    async def post(self, name: str) -> None:
        body = self.body()
        version = body.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ApiError(400, "ValueError: 'version' must be an integer")
        alias = _text(body, "alias", required=True)
        self.reply(await self.models(api.promote_model, name, version, alias, promote=name))


class MissingHandler(UltronHandler):
    """Any other path under the API: 404 JSON, not the server's HTML page."""

    @web.authenticated
    async def get(self, path: str) -> None:
        raise ApiError(404, f"NotFoundError: no ultron API route {path!r}")

    @web.authenticated
    async def post(self, path: str) -> None:
        raise ApiError(404, f"NotFoundError: no ultron API route {path!r}")


def _p(template: str, *names: str) -> str:
    return template.format(*(_NAME.format(n) for n in names))


#: (path under ``<base_url>ultron/api/``, handler): every route of the extension.
ROUTES: list[tuple[str, type[UltronHandler]]] = [
    ("info", InfoHandler),
    ("flows", FlowsHandler),
    (_p("flows/{}", "name"), FlowHandler),
    (_p("flows/{}/dag.svg", "name"), DagHandler),
    ("experiments", ExperimentsHandler),
    (_p("experiments/{}", "name"), ExperimentHandler),
    (_p("experiments/{}/diff/{}", "name", "other"), DiffHandler),
    (_p("experiments/{}/savepoints", "name"), SavepointsHandler),
    (_p("experiments/{}/quality", "name"), QualityHandler),
    (_p("experiments/{}/stop", "name"), StopHandler),
    (_p("experiments/{}/resume", "name"), ResumeHandler),
    (_p("experiments/{}/nodes/{}/restart", "name", "node"), RestartHandler),
    (_p("experiments/{}/clone", "name"), CloneHandler),
    ("events", EventsHandler),
    ("models", ModelsHandler),
    (_p("models/{}/versions", "name"), ModelVersionsHandler),
    (_p("models/{}/promote", "name"), PromoteHandler),
    ("(?P<path>.*)", MissingHandler),
]
