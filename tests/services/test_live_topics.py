"""Live appends to local topics are read in order, whatever their pattern (issue 12, item 3).

A stream job over a flow that is not the CTR demo (``orders`` + ``payments`` → ``paid_orders``,
a LEFT interval join) runs on the real cluster while segments are appended in three patterns:
a burst of six segments per partition at once, partitions at different rates, one partition
idle for a long stretch and then a burst. For each pattern the live output must equal, row for
row, the output of a bounded read of the same final data and the truth computed in pandas
from the topic files. Stop with a savepoint → append → resume must give the truth too (fed
with ``Workspace.append``).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ultron_nb import experiments as ex
from ultron_nb.engines.flink.rest import FlinkRest

from .orders_flow import (
    SLICE,
    T0,
    WINDOW,
    Feed,
    compare,
    define_orders_flow,
    flushed,
    keys_of,
    minute_keys,
    minute_truth,
    output_rows,
    truth,
)

pytestmark = [pytest.mark.flink, pytest.mark.slow]

#: Twice the 5 s source idle timeout that used to be set for parallelism > 1.
IDLE_STRETCH_S = 10.0


def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.3) -> bool:
    """Wait for ``predicate``; False (not an error) when it did not come true in time, so a
    test can still report what it measured."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def _burst(ws: Any, feed: Feed) -> dict[str, Any]:
    feed.append_all(6)
    return {}


def _rates(ws: Any, feed: Feed) -> dict[str, Any]:
    """Three producers at different rates: partitions 0 and 1 a segment every 0.1 s and
    0.2 s, partition 2 a batch of eight every 2 s, so it lags and catches up in jumps; each
    writes 16 minutes."""
    batches = {0: (1, 1), 1: (2, 1), 2: (20, 8)}  # partition → (ticks between, segments)
    tick = 0
    while any(feed.cursor[p] < 16 for p in batches):
        for part, (every, size) in batches.items():
            if tick % every == 0 and feed.cursor[part] < 16:
                feed.append(part, min(size, 16 - feed.cursor[part]))
        tick += 1
        time.sleep(0.1)  # the producers' pace, not a synchronisation
    return {}


def _idle(ws: Any, feed: Feed) -> dict[str, Any]:
    """Partition 2 stays idle while 0 and 1 advance 15 minutes; then it bursts."""
    for part in (0, 1):
        feed.append(part, 15)
    idle_end = T0 + feed.cursor[2] * SLICE  # the idle partition's data ends here
    started = time.monotonic()

    def ahead() -> bool:  # the job has read the others' new data (matched rows come out)
        return any(pd.Timestamp(r["ts"]) > idle_end for r in output_rows(ws, "live"))

    processed = poll(ahead, 60)
    max_wm = None
    while time.monotonic() - started < IDLE_STRETCH_S:  # the idle stretch itself
        marks = [pd.Timestamp(r["__wm"], unit="ms") for r in output_rows(ws, "live")
                 if r.get("__wm") is not None]
        max_wm = max(marks) if marks else max_wm
        time.sleep(0.5)
    feed.append(2, 15)
    return {"processed_others": processed, "idle_end": idle_end, "max_wm_while_idle": max_wm}


PATTERNS = {"burst": _burst, "rates": _rates, "idle": _idle}


def _finish(ws: Any, feed: Feed, want: dict[str, Any]) -> bool:
    """Flush step after step until paid_minute closed the last window of the data (a
    watermark reaches paid_minute only with paid_orders' rows, so one step may not do)."""
    for step in range(1, 9):
        feed.flush(step)
        if poll(lambda: flushed(ws, "live", want), 3 if step < 8 else 30):
            return True
    return False


def _bounded_read(ws: Any) -> Counter[tuple[Any, ...]]:
    """paid_orders over the same files, read as a bounded replay (another flow over the same
    topic paths)."""
    define_orders_flow(ws, "orders_replay", path_prefix=str(ws.settings.home / "topics"),
                       downstream=False)
    ex.launch(ws, "orders_replay", name="replay", bounded=True)
    assert poll(lambda: ex.status(ws, "replay").state == "finished", 120), \
        str(ex.status(ws, "replay"))
    return keys_of(output_rows(ws, "replay"))


def _minutes_wrong(got: Counter[tuple[Any, ...]], want: dict[str, tuple[Any, ...]]) -> int:
    """Rows of paid_minute missing, duplicated or wrong against the truth."""
    expected = minute_truth(want)
    last = max(expected)[0]  # later windows hold only the flush rows
    got = Counter({k: n for k, n in got.items() if k[0] <= last})
    return sum(((got - expected) + (expected - got)).values())


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_live_appends_give_the_bounded_output_and_the_truth(flink_workspace: Any,
                                                            pattern: str) -> None:
    ws = flink_workspace
    define_orders_flow(ws)
    feed = Feed(ws)
    feed.append_all(3)  # a backlog
    st = ex.launch(ws, "orders", name="live")
    assert st.state == "running", str(st)
    seen = PATTERNS[pattern](ws, feed)
    want = truth(ws.settings.home)
    _finish(ws, feed, want)
    live = keys_of(output_rows(ws, "live"))
    live_minutes = minute_keys(output_rows(ws, "live", "paid_minute"))
    ex.stop(ws, "live")
    bounded = _bounded_read(ws)
    figures = {"live": compare(live, want), "bounded": compare(bounded, want),
               "live_equals_bounded": live == bounded,
               "minutes_wrong": _minutes_wrong(live_minutes, want), **seen}
    print(f"\n{pattern}: {figures}")  # the measured figures, shown with -s
    zero = {"missing": 0, "duplicates": 0, "wrong": 0, "wrong_positive": 0}
    assert {k: figures["live"][k] for k in zero} == zero, figures
    assert {k: figures["bounded"][k] for k in zero} == zero, figures
    assert live == bounded, figures
    assert figures["live"]["positives"] > 100
    # paid_minute read paid_orders' output (part files per sink subtask) just as exactly.
    assert figures["minutes_wrong"] == 0, figures
    if pattern == "idle":
        # The idle partition held the watermark back while the others ran 15 min ahead: the
        # output (an interval join: its watermark trails the input by the 10 min window)
        # stayed behind the idle partition's data.
        assert seen["processed_others"], figures
        wm = seen["max_wm_while_idle"]
        assert wm is None or wm <= seen["idle_end"] - WINDOW, figures


def _restored_positions(cluster: Any) -> set[tuple[Path, int]]:
    """(segment file, byte offset) of every topic split a reader of ``cluster`` was given
    back from state, from the TaskManager log (SourceReaderBase logs the splits it adds)."""
    found = set()
    for log in cluster.log_dir.glob("flink-*taskexecutor*.log"):
        for m in re.finditer(r"TopicSplit\{p\d{4} (\S+) at (seg-\d+\.jsonl):(\d+)\}",
                             log.read_text(errors="replace")):
            found.add((Path(m.group(1)) / m.group(2), int(m.group(3))))
    return found


def test_stop_with_savepoint_appends_and_resume_give_the_truth(flink_workspace: Any,
                                                               flink_cluster: Any) -> None:
    ws = flink_workspace
    define_orders_flow(ws)
    feed = Feed(ws, api=True)  # through Workspace.append, as a user feeds a topic
    feed.append_all(3)
    st = ex.launch(ws, "orders", name="live")
    # The jobs run on the cluster with the connector jar (shipped with pipeline.jars).
    with FlinkRest(st.target) as rest:
        for node, partitions in (("paid_orders", 2), ("paid_minute", 1)):
            sources = [v for v in rest.plan(st[node].job_id)
                       if "UltronTopic" in v["description"]]
            assert sources and all(v["parallelism"] == partitions for v in sources), sources
    feed.append_all(6)
    assert poll(lambda: len(output_rows(ws, "live")) >= 50, 60)  # mid-stream
    before_restore = _restored_positions(flink_cluster)
    # A segment to be stopped in the middle of: big enough that the reader is still in it
    # when the stop's barrier arrives (30 000 rows were read to their end on a fast machine).
    big = feed.append_big(0, 60_000)
    # Stop while the job reads it: its orders come out as they are read.
    assert poll(lambda: sum(r["order_id"].startswith(big)
                            for r in output_rows(ws, "live")) >= 300, 60)
    st = ex.stop(ws, "live", savepoint=True)
    assert st.state == "stopped" and st["paid_orders"].savepoint, str(st)
    assert st["paid_minute"].savepoint, str(st)
    before = keys_of(output_rows(ws, "live"))
    feed.append_all(6)  # while it is stopped
    st = ex.resume(ws, "live")
    assert st.state == "running", str(st)
    feed.append_all(3)  # after the resume
    want = truth(ws.settings.home)
    _finish(ws, feed, want)
    got = keys_of(output_rows(ws, "live"))
    figures = compare(got, want)
    figures["minutes_wrong"] = _minutes_wrong(
        minute_keys(output_rows(ws, "live", "paid_minute")), want)
    restored = _restored_positions(flink_cluster) - before_restore
    inside = sorted((p.parent.parent.name, p.name, n, p.stat().st_size) for p, n in restored
                    if 0 < n < p.stat().st_size)
    print(f"\nsavepoint: rows before stop {sum(before.values())}, resumed inside segments "
          f"{inside}, {figures}")
    assert {k: figures[k] for k in ("missing", "duplicates", "wrong", "wrong_positive",
                                    "minutes_wrong")} == \
        {"missing": 0, "duplicates": 0, "wrong": 0, "wrong_positive": 0, "minutes_wrong": 0}, \
        figures
    assert sum(before.values()) < figures["rows"]
    assert inside, restored  # a partition resumed in the middle of a segment
