"""Following a live result, bounded: ``preview NODE --follow`` and ``sql --follow`` (their
sources are in :mod:`ultron_nb.experiments.follow_sources`).

A :class:`Follow` reads changelog rows (``+I`` insert, ``-U``/``+U`` update before/after,
``-D`` delete) from a source in a worker thread and builds the result table from them the way
Zeppelin's update modes show a streaming result (:class:`ResultTable`): an append-only result
grows row by row (*append* mode); an updating one is a table whose rows are replaced in place
(*update* mode, keyed by the columns the query groups by when they are in the result, else by
the rows themselves, which a retraction names exactly).

It stops at the first cap reached — ``limit`` rows in the table, ``duration`` seconds — or
when interrupted, and the cap stops the work, not only the display: the source is cancelled.
For ``sql --follow`` the source is a streaming query in this process's own mini cluster
(:func:`ultron_nb.engines.flink.submit.stream_query`): cancelling its job ends the job and the
mini cluster, it takes no slot from the experiments' cluster, and a kernel that dies takes it
along (a query left running on a shared cluster would hold a slot with no reader). The worker
thread makes every call into PyFlink, so an interrupt (``KeyboardInterrupt``) only ever lands
in the waiting thread, which cancels the job and returns the rows so far.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ultron_nb.errors import ConfigError, UltronError
from ultron_nb.views import Table

if TYPE_CHECKING:
    import pandas as pd


log = logging.getLogger(__name__)

KINDS = ("+I", "-U", "+U", "-D")


class RowSource(Protocol):
    """Where a follow's rows come from (iterated in the worker thread, cancelled from the
    waiting one)."""

    columns: list[str]
    insert_only: bool

    def __iter__(self) -> Iterator[tuple[str, tuple[Any, ...]]]: ...

    def cancel(self) -> None: ...

    def outcome(self) -> str: ...


# ---------------------------------------------------------------- the result table
class ResultTable:
    """The table a changelog builds (pure logic).

    ``append``: every row is added. ``update``: ``+I``/``+U`` upsert, ``-D`` deletes, ``-U``
    retracts. With ``key`` (column names), a row is found by its key; without, by its values
    — a ``-U`` marks the row's place and the ``+U`` that follows takes it, so an update shows
    in place either way.
    """

    def __init__(self, columns: Sequence[str], *, mode: str = "append",
                 key: Sequence[str] | None = None):
        if mode not in ("append", "update"):
            raise ConfigError(f"unknown result mode {mode!r} (append or update)")
        self.columns = list(columns)
        self.mode = mode
        missing = [k for k in key or () if k not in self.columns]
        if missing:
            raise ConfigError(f"key column {missing[0]!r} is not in the result "
                              f"(columns: {', '.join(self.columns)})")
        self.key = list(key) if key and mode == "update" else None
        self._at = [self.columns.index(k) for k in self.key or ()]
        self._rows: list[tuple[Any, ...] | None] = []  # None: a retracted row's place
        self._by_key: dict[tuple[Any, ...], int] = {}
        self._hole: int | None = None  # where the last -U took a row out
        self.counts = dict.fromkeys(KINDS, 0)

    def __len__(self) -> int:
        return sum(1 for r in self._rows if r is not None)

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        return [r for r in self._rows if r is not None]

    def apply(self, kind: str, values: tuple[Any, ...]) -> None:
        if kind not in KINDS:
            raise ConfigError(f"unknown changelog kind {kind!r}")
        self.counts[kind] += 1
        if self.mode == "append":
            self._rows.append(values)
            return
        if self.key is not None:
            self._keyed(kind, values)
        else:
            self._by_value(kind, values)

    def _keyed(self, kind: str, values: tuple[Any, ...]) -> None:
        k = tuple(values[i] for i in self._at)
        at = self._by_key.get(k)
        if kind in ("+I", "+U"):
            if at is None:
                self._by_key[k] = len(self._rows)
                self._rows.append(values)
            else:
                self._rows[at] = values
        elif kind == "-D" and at is not None:
            self._rows[at] = None
            del self._by_key[k]
        # -U: the +U that follows replaces the row where it is

    def _by_value(self, kind: str, values: tuple[Any, ...]) -> None:
        if kind in ("-U", "-D"):
            for i, row in enumerate(self._rows):
                if row == values:
                    self._rows[i] = None
                    self._hole = i if kind == "-U" else None
                    return
            return
        if kind == "+U" and self._hole is not None:
            self._rows[self._hole] = values
            self._hole = None
            return
        self._rows.append(values)

    def compact(self) -> None:
        """Drop the places of deleted rows (keeps memory bounded by the live rows)."""
        if len(self._rows) > 2 * len(self) + 64:
            self._rows = self.rows
            self._by_key = {tuple(r[i] for i in self._at): n for n, r in enumerate(self._rows)} \
                if self.key is not None else {}
            self._hole = None

    @property
    def describe(self) -> str:
        if self.mode == "append":
            return "append mode"
        return "update mode, " + (f"keyed by {', '.join(self.key)}" if self.key
                                  else "rows retracted by value")


# ---------------------------------------------------------------- a bounded follow
_END = object()


class Follow:
    """A bounded live result: ``start()`` makes the source (in a worker thread) and reads
    it; :meth:`poll` applies what arrived and enforces the caps; :meth:`run` does both in the
    foreground until a cap, the source's end or an interrupt."""

    def __init__(self, start: Callable[[], RowSource], *, columns: Sequence[str] = (),
                 limit: int = 100, duration: float | None = 60.0,
                 key: Sequence[str] | None = None, title: str = "follow",
                 cleanup: Callable[[], None] | None = None):
        if limit <= 0:
            raise ConfigError("--limit must be positive")
        if duration is not None and duration <= 0:
            raise ConfigError("--duration must be positive")
        self._start = start
        self.limit = limit
        self.duration = duration
        self.title = title
        self.columns = list(columns)
        self._key = list(key) if key else None
        self.table = ResultTable(self.columns)
        self.reason = ""  # why it stopped: limit, duration, interrupted, ended, error
        self.outcome = ""  # how the source's work ended (canceled, finished, ...)
        self.error: BaseException | None = None
        self.started_at: float | None = None
        self._cleanup = cleanup
        self.changes = 0  # counts what changed (rows, start, stop): a view redraws on it
        self._log: deque[tuple[str, tuple[Any, ...]]] = deque(maxlen=10_000)
        self._header_sent = False
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=10_000)
        self._source: RowSource | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- state
    @property
    def done(self) -> bool:
        return bool(self.reason)

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    @property
    def headline(self) -> str:
        n = len(self.table)
        head = f"{self.title}: {n} row{'s' if n != 1 else ''} ({self.table.describe})"
        counts = ", ".join(f"{v} {k}" for k, v in self.table.counts.items() if v)
        if counts and self.table.mode == "update":
            head += f" from {counts}"
        if self.reason == "error":
            return f"{head} — {type(self.error).__name__}: {self.error}"
        if self.reason:
            why = {"limit": f"--limit {self.limit} reached", "ended": "the source ended",
                   "duration": f"--duration {self.duration:g} s passed",
                   "interrupted": "interrupted"}.get(self.reason, self.reason)
            return f"{head} — stopped: {why}" + (f"; job {self.outcome}" if self.outcome
                                                 else "")
        if self.started_at is None:
            return f"{head} — starting"
        left = f", {max(0.0, self.duration - self.elapsed):.0f} s left" \
            if self.duration is not None else ""
        return f"{head} — following{left}"

    # ---------------------------------------------------------------- the worker
    def start(self) -> None:
        """Start the worker thread: it makes the source, then reads it into the queue."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._work, name=f"ultron-{self.title}",
                                        daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        source = None
        try:
            source = self._start()
            self._source = source
            self._ready.set()
            if self._stopping.is_set():  # stopped while the source was starting
                source.cancel()
                return
            self._put(("columns", source.columns, source.insert_only))
            for change in source:
                if not self._put(change):
                    break
        except BaseException as exc:  # handed to the waiting thread, which raises it
            self._ready.set()
            self._put(("error", exc))
        finally:
            self._ready.set()
            if source is not None and self._stopping.is_set():
                source.cancel()
            self._put(_END)
            if self._cleanup is not None:  # the worker is the last to use the files
                self._cleanup()

    # ---------------------------------------------------------------- the waiting side
    def poll(self, timeout: float = 0.2) -> int:
        """Apply the changes that arrived (waiting up to ``timeout`` for the first); stop at
        a cap. Returns how many changes were applied; raises the source's error."""
        if self.done:
            return 0
        self.start()
        applied = 0
        deadline = time.monotonic() + timeout
        while not self.done:
            wait = max(0.0, deadline - time.monotonic()) if applied == 0 else 0.0
            if self.duration is not None and self.started_at is not None:
                wait = min(wait, max(0.0, self.duration - self.elapsed))
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            applied += self._take(item)
        if not self.done and self.duration is not None and self.started_at is not None \
                and self.elapsed >= self.duration:
            self.finish("duration")
        self.table.compact()
        if self.error is not None:
            raise self.error
        return applied

    def _take(self, item: Any) -> int:
        if item is _END:
            self.finish("ended")
            return 0
        if isinstance(item, tuple) and item and item[0] == "columns":
            _, columns, insert_only = item
            self.columns = list(columns)
            key = self._key
            mode = "append" if insert_only else "update"
            if key is not None and not all(k in self.columns for k in key):
                key = None  # grouped by something the result does not show
            self.table = ResultTable(self.columns, mode=mode, key=key)
            self.started_at = time.monotonic()
            self.changes += 1
            return 0
        if isinstance(item, tuple) and item and item[0] == "error":
            self.error = item[1]
            self.finish("error")
            return 0
        kind, values = item
        self.table.apply(kind, tuple(values))
        self._log.append((kind, tuple(values)))
        self.changes += 1
        if len(self.table) >= self.limit:
            self.finish("limit")
        return 1

    def finish(self, reason: str) -> None:
        """Stop: cancel the source (its job) and wait for the worker to end."""
        if self.reason:
            return
        self.reason = reason
        self.changes += 1
        self._stopping.set()
        if not self._ready.wait(5.0):
            self.outcome = "cancelled while starting"  # the worker cancels it once started
            return
        source = self._source
        if source is not None and reason != "ended":
            source.cancel()
        if self._thread is not None:
            self._thread.join(30)
        if source is not None:
            try:
                self.outcome = source.outcome()
            except UltronError as exc:
                self.outcome = str(exc)

    def run(self, on_update: Callable[[Follow], None] | None = None,
            every: float = 0.25) -> Follow:
        """Follow in the foreground until it stops; ``on_update`` when something changed
        (at most every ``every`` seconds, and at least once a second while following) and at
        the end. An interrupt (Ctrl-C, the kernel's interrupt) stops it and returns."""
        shown, last = -1, 0.0
        try:
            while not self.done:
                self.poll(every)
                now = time.monotonic()
                if on_update is not None and (self.changes != shown or now - last >= 1.0):
                    shown, last = self.changes, now
                    on_update(self)
        except KeyboardInterrupt:
            self.finish("interrupted")
        finally:
            if not self.done:  # an error of ours: do not leave the job running
                self.finish("error")
        if on_update is not None:
            on_update(self)
        return self

    # ---------------------------------------------------------------- showing it
    def drain_lines(self) -> list[str]:
        """The changes since the last call, one line each (``+I  v1  v2``), after a header
        line with the columns the first time: what a terminal prints as rows arrive."""
        out: list[str] = []
        if not self._header_sent and self.started_at is not None:
            out.append("    " + "  ".join(self.columns))
            self._header_sent = True
        while self._log:
            kind, values = self._log.popleft()
            out.append("  ".join([kind, *("" if v is None else str(v) for v in values)]))
        return out

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([list(r) for r in self.table.rows], columns=self.columns)

    def result_table(self) -> Table:
        return Table(self.columns, self.table.rows, title=self.headline)

    def __str__(self) -> str:
        return str(self.result_table())

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return self.result_table()._repr_html_()
