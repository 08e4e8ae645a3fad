"""Watching an experiment: successive live snapshots, refreshed on a cadence with backoff.

A :class:`Snapshot` is the experiment's status (:func:`~ultron_nb.experiments.status`, from
Flink's REST API) plus, for each running Flink node, the rows its sink has written and its
row rate (Flink's own ``numRecordsIn`` / ``numRecordsInPerSecond`` of the sink writer). A
:class:`Watcher` takes snapshots every ``interval`` seconds; when Flink does not answer, the
wait doubles up to ``max_interval`` and the snapshot carries the reason as one line, with the
last good status. It ends when the experiment has ended (stopped, canceled, finished,
failed), when ``duration`` has passed, or when it is stopped.

The notebook's watch widget runs :meth:`Watcher.start` (a background thread that only waits on
an event between refreshes); the CLI iterates :meth:`Watcher.snapshots` in the foreground.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ultron_nb.errors import ConfigError, UltronError
from ultron_nb.events.keys import ExperimentState, NodeState
from ultron_nb.views import Table

if TYPE_CHECKING:
    from ultron_nb.engines.flink.rest import FlinkRest
    from ultron_nb.experiments.report import ExperimentStatus
    from ultron_nb.workspace import Workspace

log = logging.getLogger(__name__)

#: Experiment states after which nothing changes by itself any more.
ENDED = frozenset({ExperimentState.STOPPED, ExperimentState.CANCELED,
                   ExperimentState.FINISHED, ExperimentState.FAILED})


@dataclass
class Snapshot:
    """An experiment as it was at ``at`` (epoch seconds), with its nodes' output rows."""

    status: ExperimentStatus
    at: float
    rows: dict[str, int] = field(default_factory=dict)  # node → rows its sink wrote so far
    rates: dict[str, float] = field(default_factory=dict)  # node → rows per second
    error: str = ""  # one line: why this refresh failed (``status`` is the last good one)
    retry_in: float = 0.0  # seconds until the next refresh
    number: int = 0  # 1 for the first snapshot of a watcher, then 2, 3, ...

    @property
    def ended(self) -> bool:
        """Has the experiment ended (nothing will change by itself)?"""
        return not self.error and self.status.state in ENDED

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.at).strftime("%H:%M:%S")

    def table(self) -> Table:
        """Node, kind, state, watermark, rows written, rows per second."""
        out = []
        for n in self.status.nodes:
            rows = self.rows.get(n.node)
            rate = self.rates.get(n.node)
            out.append([n.node, n.kind, n.state, n.watermark_text,
                        "" if rows is None else rows, "" if rate is None else f"{rate:.1f}"])
        return Table(["node", "kind", "state", "watermark", "rows", "rows/s"], out)

    @property
    def headline(self) -> str:
        st = self.status
        line = (f"experiment {st.name} ({st.flow} v{st.flow_version}) on {st.cluster}: "
                f"{st.state} at {self.when}")
        if self.error:
            line += f" — {self.error} (retrying in {self.retry_in:.0f} s)"
        elif st.message:
            line += f" — {st.message}"
        return line

    def __str__(self) -> str:
        return f"{self.headline}\n{self.table()}"


class Watcher:
    """Snapshots of experiment ``name`` every ``interval`` seconds (backoff up to
    ``max_interval`` while Flink does not answer), for at most ``duration`` seconds;
    ``refresh`` asks the experiment's status (:func:`~ultron_nb.experiments.status`)."""

    def __init__(self, ws: Workspace, name: str, refresh: Callable[[], ExperimentStatus], *,
                 interval: float = 2.0, max_interval: float = 30.0,
                 duration: float | None = None):
        if interval < 0 or max_interval < interval:
            raise ConfigError("watch: --interval must be ≥ 0 and at most the maximum interval")
        if duration is not None and duration <= 0:
            raise ConfigError("watch: --duration must be positive")
        self.ws = ws
        self.name = name
        self._status = refresh
        self.interval = interval
        self.max_interval = max_interval
        self.duration = duration
        self.latest: Snapshot | None = None
        self._delay = interval
        self._count = 0
        self._rests: dict[str, FlinkRest] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- one refresh
    def refresh(self) -> Snapshot:
        """Take one snapshot now; on failure keep the last good status and back off."""
        self._count += 1
        try:
            st = self._status()
            error = st.message if any(n.state == NodeState.UNKNOWN and n.error
                                      for n in st.nodes) else ""
        except UltronError as exc:
            if self.latest is None and self._count == 1:
                raise  # no such experiment, no store: the caller's mistake, say it now
            st, error = (self.latest.status if self.latest else None), \
                f"{type(exc).__name__}: {exc}"
        rows: dict[str, int] = {}
        rates: dict[str, float] = {}
        if not error and st is not None:
            try:
                self._output_rows(st, rows, rates)
            except UltronError as exc:
                error = f"{type(exc).__name__}: {exc}"
        if error:
            self._delay = min(max(self._delay * 2, 1.0), self.max_interval)
            if self.latest is not None:
                rows, rates = self.latest.rows, self.latest.rates
        else:
            self._delay = self.interval
        assert st is not None
        snap = Snapshot(st, time.time(), rows, rates, error.splitlines()[0] if error else "",
                        self._delay, self._count)
        self.latest = snap
        return snap

    def _output_rows(self, st: ExperimentStatus, rows: dict[str, int],
                     rates: dict[str, float]) -> None:
        from ultron_nb.engines.flink.rest import FlinkRest

        for n in st.nodes:
            if not n.job_id or n.state != NodeState.RUNNING or not n.kind.startswith("flink"):
                continue
            rest = self._rests.get(st.target)
            if rest is None:
                s = self.ws.settings
                rest = self._rests[st.target] = FlinkRest(
                    st.target, headers=s.flink_headers, verify=s.flink_verify, timeout=5.0)
            count, rate = rest.output_rows(n.job_id)
            if count is not None:
                rows[n.node] = count
            if rate is not None:
                rates[n.node] = rate

    # ---------------------------------------------------------------- the loop
    def snapshots(self, *, after_latest: bool = False) -> Iterator[Snapshot]:
        """Snapshots until the experiment ends, ``duration`` passes or :meth:`stop`; with
        ``after_latest``, the first one comes one wait after :attr:`latest`."""
        started = time.monotonic()
        waiting = after_latest and self.latest is not None
        if waiting and self.latest is not None and self.latest.ended:
            return
        try:
            while not self._stop.is_set():
                if waiting and self.latest is not None:
                    wait = self.latest.retry_in
                    if self.duration is not None:
                        left = self.duration - (time.monotonic() - started)
                        if left <= 0:
                            return
                        wait = min(wait, left)
                    if self._stop.wait(wait):
                        return
                snap = self.refresh()
                yield snap
                if snap.ended:
                    return
                waiting = True
        finally:
            self.close()

    def start(self, on_snapshot: Callable[[Snapshot], None],
              on_end: Callable[[], None] | None = None) -> threading.Thread:
        """Run :meth:`snapshots` in a background thread (the first one wait after
        :attr:`latest`, when there is one), calling ``on_snapshot`` with each and ``on_end``
        when it ends. Between refreshes the thread only waits on an event."""
        if self._thread is not None and self._thread.is_alive():
            raise ConfigError(f"watch {self.name}: already running")

        def loop() -> None:
            try:
                for snap in self.snapshots(after_latest=True):
                    on_snapshot(snap)
            except Exception:  # a thread has no caller to raise to: log it
                log.exception("watching %s failed", self.name)
            finally:
                if on_end is not None:
                    on_end()

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name=f"ultron-watch-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self._thread

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """End the loop (and wait for its thread, when it runs in one)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def close(self) -> None:
        for rest in self._rests.values():
            rest.close()
        self._rests.clear()

