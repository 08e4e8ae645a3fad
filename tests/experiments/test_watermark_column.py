"""A node output's hidden watermark column (``__wm``, epoch milliseconds) against a real
cluster, for a wall-clock event time and for an instant, with the reader compiled in another
session time zone than the writer: the reader's windows close on the producer's watermark,
exactly, and its counts are the truth.

A flow of its own shape: a topic of ``(id, kind, ts)`` → ``kept`` (a filter, UTC session) →
``per_minute`` (a tumbling count over ``kept``'s output, Asia/Shanghai session). Live: the
windows close only through ``kept``'s ``__wm`` (no end of input flushes them); had the zone
leaked into the conversion, the reader's watermark would be 8 hours off — every row late, or no
window ever closed.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import wait_until
from ultron_nb import experiments as ex
from ultron_nb.engines import outputs
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.flow.build import define_node
from ultron_nb.store import experiments as repo

pytestmark = [pytest.mark.flink, pytest.mark.slow]

T0 = datetime(2025, 6, 1, 12, 0)
MINUTES = 5
KEPT = "SELECT id, kind, ts FROM events WHERE kind <> 'noise'"
PER_MINUTE = """
SELECT window_start, window_end, COUNT(*) AS n
FROM TABLE(TUMBLE(TABLE kept, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end
"""


def _rows(partitions: int, ltz: bool) -> dict[int, list[dict[str, Any]]]:
    """Per partition, a row every 1.5 s of ``MINUTES`` minutes, in event-time order; every
    fourth is noise. An instant is written with its zone (``Z``), as the JSON format reads
    it."""
    out: dict[int, list[dict[str, Any]]] = {k: [] for k in range(partitions)}
    for i in range(MINUTES * 40):
        ts = T0 + timedelta(milliseconds=1500 * i + 7)
        text = ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + ("Z" if ltz else "")
        out[i % partitions].append({"id": i, "kind": "noise" if i % 4 == 3 else "click",
                                    "ts": text})
    return out


def _written_rows(ws: Any, experiment: str, node: str) -> list[dict[str, Any]]:
    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, experiment)
        member = next(m for m in repo.members(conn, exp.id) if m.node_name == node)
        inst = repo.get_instance(conn, member.instance_id)
    return [json.loads(line) for path in outputs.flink_files(Path(inst.output["path"]))
            for line in outputs.read_output_file(path).decode().splitlines() if line.strip()]


@pytest.mark.parametrize("ts_type", ["TIMESTAMP(3)", "TIMESTAMP_LTZ(3)"])
def test_the_reader_follows_the_producers_watermark_whatever_its_session_zone(
    flink_workspace: Any, ts_type: str,
) -> None:
    ws = flink_workspace
    topic = LocalTopic(ws.settings.home / "topics" / "events", 2,
                       [("id", "BIGINT"), ("kind", "STRING"), ("ts", ts_type)], "ts").create()
    for k, rows in _rows(2, "LTZ" in ts_type).items():
        topic.append(k, rows)
    opts = {"checkpoint_interval": "1 s"}
    ws.define("zones", define_node("events", f"id BIGINT, kind STRING, ts {ts_type}",
                                   kind="topic", time="ts", watermark="5 s", partitions=2))
    ws.define("zones", define_node("kept", KEPT, options={
        **opts, "table.local-time-zone": "UTC"}))
    ws.define("zones", define_node("per_minute", PER_MINUTE, options={
        **opts, "table.local-time-zone": "Asia/Shanghai"}))
    st = ex.launch(ws, "zones", name="z")
    assert st.state == "running", str(st)

    # Data ends at 12:04:59.9, so the source's watermark stops near 12:04:55: the windows
    # of minutes 0-3 close, the last one stays open (live: no end of input).
    closed = MINUTES - 1
    def windows() -> Any:
        found = ex.preview(ws, "per_minute", experiment="z", limit=100)
        return (found,) if len(found) >= closed else None

    (frame,) = wait_until(windows, 120, "per_minute's windows of minutes 0-3")
    truth = Counter((T0 + timedelta(milliseconds=1500 * i + 7)).minute
                    for i in range(MINUTES * 40) if i % 4 != 3)
    assert sorted(frame.n.tolist()) == sorted(truth[T0.minute + m] for m in range(closed))
    assert len(ex.preview(ws, "per_minute", experiment="z", limit=100)) == closed

    # kept wrote its watermark as epoch milliseconds, never ahead of its own rows' time.
    written = _written_rows(ws, "z", "kept")
    marks = [r["__wm"] for r in written if r["__wm"] is not None]
    assert marks and all(isinstance(m, int) for m in marks)
    utc = T0.replace(tzinfo=UTC)
    last = utc + timedelta(minutes=MINUTES)
    assert all(utc - timedelta(minutes=1) < datetime.fromtimestamp(m / 1000, UTC)
               < last for m in marks), (min(marks), max(marks))
    ex.stop(ws, "z")
