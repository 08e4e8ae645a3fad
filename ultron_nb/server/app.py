"""The server extension's app (settings, routes, clean-up) and the state its handlers share.

:class:`UltronServer` is a Jupyter ``ExtensionApp``: its settings are traitlets, so
``--UltronServer.flink_timeout=5`` and ``c.UltronServer.home = "..."`` in a Jupyter config
file work, and the server stops it on shutdown. :class:`PanelState` is what
every handler shares: the workspace, opened on first use, and two thread pools — one for calls
that only read the metadata store, one for calls that talk to Flink — so a Flink cluster that
hangs never delays the listings, and nothing blocks the server's event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Float, Int, Unicode

from ultron_nb.server.live import LiveStatus

T = TypeVar("T")

API_PREFIX = "ultron/api"
STATE_KEY = "ultron_panel"


class UltronServer(ExtensionApp):
    """ultron's Jupyter server extension: the side panel's API under ``<base_url>ultron/api/``."""

    name = "ultron_nb"
    load_other_extensions = True

    home = Unicode("", config=True,
                   help="ultron's home (metadata store and topics); default: the usual "
                        "resolution (ULTRON_HOME, pyproject.toml, <root_dir>/.ultron)")
    read_timeout = Float(5.0, config=True,
                         help="seconds a store-only request may take before it answers 504")
    flink_timeout = Float(8.0, config=True,
                          help="seconds a request that asks Flink may take before it answers "
                               "504 'Flink cluster at ... does not answer'")
    action_timeout = Float(180.0, config=True,
                           help="seconds an action (stop, resume, restart, clone) may take "
                                "before the request answers 504 (the action goes on)")
    live_interval = Float(1.0, config=True,
                          help="seconds between background status refreshes of an experiment "
                               "a panel has open")
    live_max_age = Float(5.0, config=True,
                         help="oldest status (seconds) a request answers without waiting for "
                              "a fresh one")
    live_idle = Float(30.0, config=True,
                      help="seconds after the last request before an experiment is no longer "
                           "refreshed")
    store_threads = Int(4, config=True, help="worker threads for store-only requests")
    flink_threads = Int(8, config=True, help="worker threads for requests that ask Flink")

    state: PanelState | None = None

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        self.state = PanelState(self, str(self.serverapp.root_dir))
        self.settings[STATE_KEY] = self.state
        self.log.info("ultron_nb: side panel API at %s",
                      url_path_join(self.serverapp.base_url, API_PREFIX, ""))

    def initialize_handlers(self) -> None:
        from ultron_nb.server.handlers import ROUTES

        self.handlers.extend((url_path_join(API_PREFIX, path), handler)
                             for path, handler in ROUTES)

    async def stop_extension(self) -> None:
        if self.state is not None:
            self.state.close()


class Timeout(Exception):
    """A call did not return within its time."""


class Busy(Exception):
    """Another action on the same experiment has not finished."""


class PanelState:
    """The workspace and the worker pools the handlers share."""

    def __init__(self, config: UltronServer, root_dir: str):
        self.config = config
        self.root_dir = root_dir
        self.store_pool = ThreadPoolExecutor(config.store_threads,
                                             thread_name_prefix="ultron-store")
        self.flink_pool = ThreadPoolExecutor(config.flink_threads,
                                             thread_name_prefix="ultron-flink")
        self._ws: Any = None
        self._lock = threading.Lock()
        self._acting: set[str] = set()
        self._dags: dict[str, tuple[str, float]] = {}
        self.live = LiveStatus(self._status, interval=config.live_interval,
                               max_age=config.live_max_age, idle=config.live_idle)

    async def _status(self, name: str) -> Any:
        from ultron_nb.server import api

        def work() -> Any:
            ws = self.workspace()
            st = api.experiment(ws, name)
            dag = self._dags.get(name)
            if dag and time.monotonic() - dag[1] <= self.config.live_idle:
                api.dag_svg(ws, dag[0], st)  # rendered before the status is published
            return st

        # No timeout here: a waiting request has its own; the refresh runs to its end.
        return await asyncio.get_running_loop().run_in_executor(self.flink_pool, work)

    def watch_dag(self, experiment: str, flow: str) -> None:
        """A panel shows ``flow``'s DAG for ``experiment``: render it with each refresh."""
        self._dags[experiment] = (flow, time.monotonic())

    async def status(self, name: str) -> tuple[Any, float]:
        """The live status of experiment ``name`` and when it was asked (epoch seconds)."""
        try:
            return await self.live.get(name, self.config.flink_timeout)
        except TimeoutError:
            raise Timeout(f"no answer within {self.config.flink_timeout:g} s") from None

    def workspace(self) -> Any:
        """The workspace, with its store open (called in a worker thread)."""
        with self._lock:
            if self._ws is None:
                from ultron_nb.server import api

                ws = api.open_workspace(self.root_dir, self.config.home)
                ws.db.ensure_schema()
                self._ws = ws
            return self._ws

    async def run(self, fn: Callable[..., T], *args: Any, flink: bool, timeout: float,
                  **kwargs: Any) -> T:
        """``fn(workspace, *args, **kwargs)`` in a worker thread; :class:`Timeout` after
        ``timeout`` seconds (the thread finishes its call in the background)."""
        pool = self.flink_pool if flink else self.store_pool

        def work() -> T:
            return fn(self.workspace(), *args, **kwargs)

        future = asyncio.get_running_loop().run_in_executor(pool, work)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise Timeout(f"no answer within {timeout:g} s") from None

    async def act(self, experiment: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an action on ``experiment``; one at a time per experiment."""
        if experiment in self._acting:
            raise Busy(f"an action on experiment {experiment!r} is still running")
        self._acting.add(experiment)
        try:
            return await self.run(fn, *args, flink=True, timeout=self.config.action_timeout,
                                  **kwargs)
        finally:
            self._acting.discard(experiment)
            self.live.forget(experiment)  # the next request asks Flink afresh

    def close(self) -> None:
        self.live.stop()
        self.store_pool.shutdown(wait=False, cancel_futures=True)
        self.flink_pool.shutdown(wait=False, cancel_futures=True)


