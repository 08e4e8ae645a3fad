"""What the side panel's handlers share: the workspace and the worker pools.

:class:`PanelState` holds the workspace, opened on first use, and two thread pools — one for
calls that only read the metadata store, one for calls that talk to Flink — so a Flink cluster
that hangs never delays the listings, and nothing blocks the server's event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from ultron_nb.server import api
from ultron_nb.server.live import LiveStatus

if TYPE_CHECKING:
    from ultron_nb.server.app import UltronServer

T = TypeVar("T")

STATE_KEY = "ultron_panel"


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
        try:
            return await self._one_at_a_time(experiment, f"experiment {experiment!r}", fn,
                                             args, kwargs, self.config.action_timeout)
        finally:
            self.live.forget(experiment)  # the next request asks Flink afresh

    async def act_on_model(self, model: str, fn: Callable[..., T], *args: Any,
                           **kwargs: Any) -> T:
        """Run an action on registered model ``model`` (a promotion: it reads, changes and
        writes the alias's history); one at a time per model."""
        return await self._one_at_a_time(f"model:{model}", f"model {model!r}", fn, args,
                                         kwargs, self.config.model_timeout)

    async def _one_at_a_time(self, key: str, what: str, fn: Callable[..., T],
                             args: tuple[Any, ...], kwargs: dict[str, Any],
                             timeout: float) -> T:
        if key in self._acting:
            raise Busy(f"an action on {what} is still running")
        self._acting.add(key)
        try:
            return await self.run(fn, *args, flink=True, timeout=timeout, **kwargs)
        finally:
            self._acting.discard(key)

    def close(self) -> None:
        self.live.stop()
        self.store_pool.shutdown(wait=False, cancel_futures=True)
        self.flink_pool.shutdown(wait=False, cancel_futures=True)


