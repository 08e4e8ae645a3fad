"""The pure logic of live views: the table a changelog builds, the caps of a follow, the
backoff of a watch (fake sources and statuses here; the real ones run in test_live.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ultron_nb.errors import ClusterError, NotFoundError, SqlError
from ultron_nb.experiments.follow import Follow, ResultTable
from ultron_nb.experiments.report import ExperimentStatus, NodeStatus
from ultron_nb.experiments.watch import Watcher


# ---------------------------------------------------------------- the result table
def test_append_mode_keeps_every_row() -> None:
    t = ResultTable(["a", "b"])
    for i in range(3):
        t.apply("+I", (i, "x"))
    assert t.rows == [(0, "x"), (1, "x"), (2, "x")] and t.describe == "append mode"


def test_update_mode_keyed_by_the_group_key_replaces_rows_in_place() -> None:
    t = ResultTable(["item", "n"], mode="update", key=["item"])
    for kind, row in [("+I", ("a", 1)), ("+I", ("b", 1)), ("-U", ("a", 1)), ("+U", ("a", 2)),
                      ("+I", ("c", 1)), ("-D", ("b", 1)), ("-U", ("c", 1)), ("+U", ("c", 5))]:
        t.apply(kind, row)
    assert t.rows == [("a", 2), ("c", 5)]
    assert t.counts == {"+I": 3, "-U": 2, "+U": 2, "-D": 1}
    assert t.describe == "update mode, keyed by item"


def test_update_mode_without_a_key_retracts_rows_by_value_in_place() -> None:
    t = ResultTable(["n"], mode="update")
    for kind, row in [("+I", (1,)), ("+I", (7,)), ("-U", (1,)), ("+U", (2,)), ("-D", (7,)),
                      ("+I", (7,)), ("-U", (7,)), ("+U", (8,)), ("-D", (99,))]:
        t.apply(kind, row)
    assert t.rows == [(2,), (8,)]  # the updated rows stayed where they were
    for _ in range(200):
        t.apply("+I", (0,))
        t.apply("-D", (0,))
    t.compact()
    assert t.rows == [(2,), (8,)] and len(t._rows) == 2  # deleted places do not pile up


def test_a_key_the_result_lacks_is_refused() -> None:
    with pytest.raises(Exception, match="key column 'x' is not in the result"):
        ResultTable(["a"], mode="update", key=["x"])


# ---------------------------------------------------------------- a follow's caps
class FakeSource:
    """Rows on demand: ``feed`` adds them; iterating blocks until some come or cancel."""

    def __init__(self, columns: list[str], insert_only: bool = True) -> None:
        self.columns = columns
        self.insert_only = insert_only
        self.cond = threading.Condition()
        self.pending: list[tuple[str, tuple[Any, ...]]] = []
        self.cancelled = threading.Event()
        self.read = 0

    def feed(self, *changes: tuple[str, tuple[Any, ...]]) -> None:
        with self.cond:
            self.pending.extend(changes)
            self.cond.notify_all()

    def __iter__(self) -> Iterator[tuple[str, tuple[Any, ...]]]:
        while not self.cancelled.is_set():
            with self.cond:
                self.cond.wait_for(lambda: self.pending or self.cancelled.is_set(), 5)
                batch, self.pending = self.pending, []
            for change in batch:
                self.read += 1
                yield change

    def cancel(self) -> None:
        self.cancelled.set()
        with self.cond:
            self.cond.notify_all()

    def outcome(self) -> str:
        return "canceled" if self.cancelled.is_set() else "finished"


def test_the_limit_stops_the_follow_and_cancels_its_source() -> None:
    src = FakeSource(["n"])
    src.feed(*[("+I", (i,)) for i in range(5)])
    f = Follow(lambda: src, limit=3, duration=30)
    seen: list[int] = []
    f.run(lambda x: seen.append(len(x.table)))
    assert f.reason == "limit" and len(f.table) == 3 and f.outcome == "canceled"
    assert src.cancelled.is_set() and not f._thread.is_alive()  # type: ignore[union-attr]
    assert seen[-1] == 3 and "stopped: --limit 3 reached; job canceled" in f.headline
    assert f.drain_lines() == ["    n", "+I  0", "+I  1", "+I  2"]


def test_the_duration_stops_a_quiet_follow() -> None:
    src = FakeSource(["n"])
    f = Follow(lambda: src, limit=10, duration=0.6)
    started = time.monotonic()
    f.run()
    assert f.reason == "duration" and time.monotonic() - started < 5
    assert src.cancelled.is_set() and f.outcome == "canceled"


def test_an_updating_source_builds_the_keyed_table() -> None:
    src = FakeSource(["item", "n"], insert_only=False)
    src.feed(("+I", ("a", 1)), ("-U", ("a", 1)), ("+U", ("a", 2)), ("+I", ("b", 1)))
    f = Follow(lambda: src, limit=2, duration=30, key=["item"])
    f.run()
    assert f.table.mode == "update" and f.table.rows == [("a", 2), ("b", 1)]
    assert f.frame().to_dict("records") == [{"item": "a", "n": 2}, {"item": "b", "n": 1}]


def test_an_interrupt_cancels_the_source_and_returns_the_rows_so_far() -> None:
    src = FakeSource(["n"])
    src.feed(("+I", (1,)))
    f = Follow(lambda: src, limit=100, duration=60)

    def interrupt_when_the_row_is_in(x: Follow) -> None:
        if len(x.table) == 1 and not x.done:
            raise KeyboardInterrupt  # what the kernel's interrupt raises in the waiting thread
    f.run(interrupt_when_the_row_is_in)
    assert f.reason == "interrupted" and f.table.rows == [(1,)] and src.cancelled.is_set()


def test_a_source_that_fails_to_start_raises_in_the_caller() -> None:
    def start() -> Any:
        raise SqlError("sql --follow: Object 'nope' not found")

    f = Follow(start, limit=5)
    with pytest.raises(SqlError, match="nope"):
        f.run()
    assert f.reason == "error"


# ---------------------------------------------------------------- a watch's cadence
def _status(state: str, *, unknown: bool = False) -> ExperimentStatus:
    node = NodeStatus("j", "flink stream", "unknown" if unknown else state,
                      error="cannot reach Flink at http://127.0.0.1:1" if unknown else None)
    st = ExperimentStatus("e", "f", 1, "e", "http://127.0.0.1:1", state, nodes=[node])
    if unknown:
        st.message = node.error or ""
    return st


def test_the_watch_backs_off_while_flink_does_not_answer_and_stops_when_it_ends() -> None:
    answers = [_status("running"), _status("running", unknown=True),
               _status("running", unknown=True), ClusterError("store gone"),
               _status("running"), _status("stopped")]

    def refresh() -> ExperimentStatus:
        item = answers.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    w = Watcher(None, "e", refresh, interval=0.01, max_interval=0.08)  # type: ignore[arg-type]
    snaps = list(w.snapshots())
    assert [s.retry_in for s in snaps] == [0.01, 0.08, 0.08, 0.08, 0.01, 0.01]
    assert [bool(s.error) for s in snaps] == [False, True, True, True, False, False]
    assert snaps[3].error == "ClusterError: store gone" and snaps[3].status.state == "running"
    assert snaps[-1].ended and not answers


def test_a_watch_of_nothing_fails_at_once_and_a_started_one_ends_on_stop() -> None:
    def missing() -> ExperimentStatus:
        raise NotFoundError("no experiment 'x'")

    with pytest.raises(NotFoundError):
        Watcher(None, "x", missing).refresh()  # type: ignore[arg-type]
    w = Watcher(None, "e", lambda: _status("running"), interval=0.05)  # type: ignore[arg-type]
    got: list[int] = []
    w.start(lambda s: got.append(s.number))
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop()
    assert not w.running and len(got) >= 3
