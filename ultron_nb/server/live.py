"""Live status of the experiments the panel has open, kept fresh in the background.

Asking Flink for one experiment's status takes several REST calls (tens to hundreds of
milliseconds on a busy machine). Instead of asking on every request, the server keeps each
*watched* experiment's latest status — an experiment is watched while some panel asked for
it in the last ``idle`` seconds — and refreshes it every ``interval`` seconds in a worker
thread. A request answers the latest status at once (with its age, ``as_of``); it waits only
when there is none younger than ``max_age`` (the first request, or a Flink that stopped
answering), and then for at most the Flink timeout. Concurrent requests share one
computation, and N open panels cost Flink one status call per interval, not N.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from tornado.ioloop import PeriodicCallback

log = logging.getLogger(__name__)


class LiveStatus:
    """Latest status per watched experiment; ``compute(name)`` is awaited to refresh one."""

    def __init__(self, compute: Callable[[str], Any], *, interval: float, max_age: float,
                 idle: float):
        self._compute = compute
        self.interval = interval
        self.max_age = max_age
        self.idle = idle
        self._latest: dict[str, tuple[float, float, Any]] = {}  # name: (monotonic, epoch, st)
        self._asked: dict[str, float] = {}
        self._running: dict[str, asyncio.Future[Any]] = {}
        self._timer: PeriodicCallback | None = None

    def start(self) -> None:
        if self._timer is None:
            self._timer = PeriodicCallback(self._tick, max(50.0, self.interval * 250))
            self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    async def get(self, name: str, timeout: float) -> tuple[Any, float]:
        """``(status, as_of epoch seconds)`` of ``name``; raises what computing it raised,
        or :class:`TimeoutError` after ``timeout`` seconds."""
        self.start()
        self._asked[name] = time.monotonic()
        latest = self._latest.get(name)
        if latest is not None and time.monotonic() - latest[0] <= self.max_age:
            return latest[2], latest[1]
        st = await asyncio.wait_for(asyncio.shield(self._refresh(name)), timeout)
        return st, self._latest[name][1]

    def put(self, name: str, st: Any) -> None:
        """A status an action just returned: the freshest there is."""
        self._latest[name] = (time.monotonic(), time.time(), st)

    def forget(self, name: str) -> None:
        self._latest.pop(name, None)

    def _refresh(self, name: str) -> asyncio.Future[Any]:
        running = self._running.get(name)
        if running is None:
            running = asyncio.ensure_future(self._run(name))
            self._running[name] = running
            running.add_done_callback(lambda _f: self._running.pop(name, None))
        return running

    async def _run(self, name: str) -> Any:
        started, asked = time.monotonic(), time.time()
        st = await self._compute(name)
        self._latest[name] = (started, asked, st)
        return st

    def _tick(self) -> None:
        now = time.monotonic()
        for name, asked in list(self._asked.items()):
            if now - asked > self.idle:  # nobody looks any more
                self._asked.pop(name, None)
                self._latest.pop(name, None)
                continue
            latest = self._latest.get(name)
            if name not in self._running and (latest is None
                                              or now - latest[0] >= self.interval):
                self._refresh(name).add_done_callback(self._log_failure(name))

    @staticmethod
    def _log_failure(name: str) -> Callable[[asyncio.Future[Any]], None]:
        def done(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                log.debug("background status of %s failed: %s", name, fut.exception())
        return done
