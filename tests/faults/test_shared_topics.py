"""Topics shared across flows (issue 14, item 8).

Decision: a topic stays where it always was — ``<home>/topics/<name>`` (what the click-log
generator, ``backtrack prepare`` and the notebooks use), shared by every flow that declares
a topic of that name — and the sharing is checked: a declaration whose columns the topic
does not hold is refused in one line, at definition, at launch and when a run reads it. A
flow that wants its own topic gives it a ``--path``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.faults.faults import magic_line, one_line, row_hashes, table_rows, ultron
from tests.support.waiting import wait_until
from ultron_nb.config import Settings
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.scheduler import daemon_status, start_daemon, stop_daemon


def _gen(workdir: Path) -> Path:
    r = ultron(workdir, "gen", "clicklog", "--rate", "2", "--duration", "60", "--partitions",
               "1", "--seed", "1")
    assert r.returncode == 0, r.stderr
    return workdir / ".ultron" / "topics" / "impressions"


def test_a_topic_declared_with_columns_it_does_not_hold_is_refused(workdir: Path,
                                                                  ip: Any) -> None:
    path = _gen(workdir)
    ok = "imp_id BIGINT, user_id BIGINT, item_id BIGINT, position INT, ts TIMESTAMP(3)"
    r = ultron(workdir, "node", "impressions", "--flow", "a", "--kind", "topic", "--time",
               "ts", stdin=ok)
    assert r.returncode == 0, r.stderr
    store = workdir / ".ultron" / "ultron.db"
    before = row_hashes(store)
    r = ultron(workdir, "node", "impressions", "--flow", "b", "--kind", "topic", "--time",
               "ts", stdin="query STRING, ts TIMESTAMP(3)")
    one_line(r, "node 'impressions'", str(path), "no column 'query'", "--path",
             error="DataError")
    r = ultron(workdir, "node", "impressions", "--flow", "b", "--kind", "topic",
               stdin="imp_id BOOLEAN")
    one_line(r, "'imp_id' is BIGINT, not BOOLEAN", error="DataError")
    line = magic_line(ip, "node impressions --flow b --kind topic", "query STRING")
    assert line.startswith("DataError: ") and "no column 'query'" in line
    assert row_hashes(store) == before

    # What the notebooks do stays fine: a subset, numbers read as text.
    r = ultron(workdir, "node", "impressions", "--flow", "b", "--kind", "topic", "--time",
               "ts", stdin="imp_id STRING, ts TIMESTAMP(3)")
    assert r.returncode == 0, r.stderr
    # A topic of its own: --path.
    r = ultron(workdir, "node", "impressions", "--flow", "c", "--kind", "topic", "--path",
               "mine/impressions", stdin="query STRING, ts TIMESTAMP(3)")
    assert r.returncode == 0, r.stderr
    assert not (workdir / "mine").exists()  # nothing written until it is used


@pytest.mark.slow
def test_a_run_that_would_read_another_flows_topic_with_its_own_columns_fails(
    workdir: Path,
) -> None:
    """The reported case: flow b's DuckDB node read flow a's data under b's columns and got
    NULLs. Now the launch refuses once the data is there, and so does the run when the data
    arrived after the launch."""
    settings = Settings(home=workdir / ".ultron")
    for args, body in (
            (["node", "logs", "--flow", "b", "--kind", "topic", "--time", "ts"],
             "b BIGINT, ts TIMESTAMP(3)"),
            (["node", "total", "--flow", "b", "--kind", "duckdb", "--bounded", "--on-event",
              "go"],
             "SELECT SUM(b) AS total, COUNT(*) AS n FROM logs")):
        r = ultron(workdir, *args, stdin=body)
        assert r.returncode == 0, r.stderr
    try:
        start_daemon(settings)
        r = ultron(workdir, "run", "--flow", "b", "--name", "b1")  # no data yet: fine
        assert r.returncode == 0, r.stderr
        # Another flow's data arrives at the same path, with its own columns.
        path = workdir / ".ultron" / "topics" / "logs"
        topic = LocalTopic(path, 1, [("a", "STRING"), ("ts", "TIMESTAMP(3)")], "ts").create()
        topic.append(0, [{"a": "x", "ts": "2025-01-01 00:00:00.000"}])
        store = workdir / ".ultron" / "ultron.db"
        # What a launch writes (the running daemon meanwhile records b1's events).
        launch_tables = ("experiments", "experiment_nodes", "node_instances", "jobs", "flows",
                         "flow_versions", "node_bodies")

        def launch_rows() -> dict[str, str]:
            return {t: h for t, h in row_hashes(store).items() if t in launch_tables}
        before = launch_rows()
        r = ultron(workdir, "run", "--flow", "b", "--name", "b2")
        one_line(r, "node 'logs'", str(path), "no column 'b'", error="DataError")
        assert launch_rows() == before

        r = ultron(workdir, "send", "go", "1")
        assert r.returncode == 0, r.stderr

        def failed() -> Any:
            r = ultron(workdir, "status", "b1")
            return "failed" in r.stdout and r.stdout
        out = wait_until(failed, 120, "the DuckDB run to fail")
        line = next(ln for ln in out.splitlines() if ln.strip().startswith("total"))
        assert "input 'logs'" in line and "no column 'b'" in line and str(path) in line
        assert not list((workdir / ".ultron" / "topics").glob("total_*/data.parquet"))
        jobs = table_rows(store)["jobs"]
        assert [(j[2], j[5]) for j in jobs] == [("duckdb", "failed")]
    finally:
        pid = daemon_status(settings)
        if pid and pid > 0:
            try:
                stop_daemon(settings)
            except Exception:
                os.kill(pid, signal.SIGKILL)
