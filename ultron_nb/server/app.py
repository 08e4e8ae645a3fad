"""Settings and shared state of the server extension, and its registration.

:class:`UltronServer` holds the settings (traitlets, so ``--UltronServer.flink_timeout=5`` and
``c.UltronServer.home = "..."`` in a Jupyter config file work). :class:`PanelState` is what
every handler shares: the workspace, opened on first use, and two thread pools — one for calls
that only read the metadata store, one for calls that talk to Flink — so a Flink cluster that
hangs never delays the listings, and nothing blocks the server's event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from jupyter_server.utils import url_path_join
from traitlets import Float, Int, Unicode
from traitlets.config import Configurable

T = TypeVar("T")

API_PREFIX = "ultron/api"
STATE_KEY = "ultron_panel"


class UltronServer(Configurable):
    """Settings of ultron's Jupyter server extension."""

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
    store_threads = Int(4, config=True, help="worker threads for store-only requests")
    flink_threads = Int(8, config=True, help="worker threads for requests that ask Flink")


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

    def close(self) -> None:
        self.store_pool.shutdown(wait=False, cancel_futures=True)
        self.flink_pool.shutdown(wait=False, cancel_futures=True)


def setup(serverapp: Any) -> None:
    """Register the routes under ``<base_url>ultron/api/``."""
    from ultron_nb.server.handlers import ROUTES

    web_app = serverapp.web_app
    config = UltronServer(parent=serverapp)
    state = PanelState(config, str(serverapp.root_dir))
    web_app.settings[STATE_KEY] = state
    base = url_path_join(web_app.settings["base_url"], API_PREFIX)
    web_app.add_handlers(".*$", [(url_path_join(base, path), handler)
                                 for path, handler in ROUTES])
    serverapp.log.info("ultron_nb: side panel API at %s/", base)
