"""Faults of runs and launches (issue 14, items 5 and 11), through the real CLI and the real
scheduler daemon (and the real Flink cluster where a launch compiles Flink SQL).

- A DuckDB node reading a dataset whose ``--path`` does not exist fails, naming the node, the
  dataset and the path (it used to finish with 0 rows).
- A node run killed with SIGKILL says so: "killed by SIGKILL (9)".
- A launch refused after compiling (invalid SQL in its second node) leaves no directory.
- A 10 MB cell body is stored once, however many versions keep it; an older store migrates.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.faults.faults import one_line, row_hashes, table_rows, ultron
from tests.support.waiting import wait_until
from ultron_nb.config import Settings
from ultron_nb.scheduler import daemon_status, start_daemon, stop_daemon


@pytest.fixture
def scheduler(workdir: Path) -> Iterator[Settings]:
    """The real scheduler daemon of ``workdir/.ultron`` (stopped by its pid afterwards)."""
    settings = Settings(home=workdir / ".ultron")
    yield settings
    pid = daemon_status(settings)
    if pid and pid > 0:
        stop_daemon(settings)


def _status(workdir: Path, experiment: str) -> str:
    r = ultron(workdir, "status", experiment)
    assert r.returncode == 0, r.stderr
    return r.stdout


# ---------------------------------------------------------------- item 5
@pytest.mark.slow
def test_a_duckdb_node_reading_a_missing_dataset_fails_naming_node_dataset_and_path(
    workdir: Path, scheduler: Settings,
) -> None:
    missing = workdir / "data" / "clicks-2024"
    r = ultron(workdir, "node", "clicks", "--flow", "f", "--kind", "dataset", "--path",
               "data/clicks-2024", "--format", "parquet", stdin="user_id BIGINT, ts TIMESTAMP")
    assert r.returncode == 0, r.stderr
    r = ultron(workdir, "node", "per_user", "--flow", "f", "--kind", "duckdb",
               stdin="SELECT user_id, COUNT(*) AS n FROM clicks GROUP BY user_id")
    assert r.returncode == 0, r.stderr
    start_daemon(scheduler)
    r = ultron(workdir, "run", "--flow", "f", "--name", "e1")
    assert r.returncode == 0, r.stderr
    out = wait_until(lambda: "failed" in (s := _status(workdir, "e1")) and s, 120,
                     "the DuckDB node to fail")
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("per_user"))
    assert "DataError" in line and "'per_user'" in line and "'clicks' (dataset)" in line
    assert f"nothing at {missing}" in line, line
    jobs = table_rows(workdir / ".ultron" / "ultron.db")["jobs"]
    assert [(j[2], j[5]) for j in jobs] == [("duckdb", "failed")]
    assert not any((workdir / ".ultron" / "topics").glob("per_user_*/data.parquet"))


# ---------------------------------------------------------------- item 11
SLEEPER = """
def sleeper():
    import time
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_run_killed_with_sigkill_says_so(workdir: Path, scheduler: Settings) -> None:
    r = ultron(workdir, "node", "sleeper", "--flow", "f", "--kind", "python", stdin=SLEEPER)
    assert r.returncode == 0, r.stderr
    start_daemon(scheduler)
    r = ultron(workdir, "run", "--flow", "f", "--name", "e1")
    assert r.returncode == 0, r.stderr
    store = workdir / ".ultron" / "ultron.db"

    def node_process() -> Any:
        running = [j for j in table_rows(store)["jobs"] if j[5] == "running"]
        if not running:
            return None
        runner = psutil.Process(int(str(running[0][3]).split(":")[0]))
        kids = runner.children()  # the node's child (forked, or an exec-node process)
        return kids[0] if kids else None

    child = wait_until(node_process, 120, "the Python node to run")
    os.kill(child.pid, signal.SIGKILL)
    out = wait_until(lambda: "failed" in (s := _status(workdir, "e1")) and s, 60,
                     "the run to be recorded as failed")
    assert "error: killed by SIGKILL (9)" in out, out
    error = next(j for j in table_rows(store)["jobs"] if j[5] == "failed")
    assert "killed by SIGKILL (9)" in str(error), error


BAD_SECOND = "SELECT imp_id, no_such_column FROM ok_first"
OK_FIRST = "SELECT imp_id, ts FROM imps"


@pytest.mark.flink
@pytest.mark.slow
def test_a_launch_refused_after_compiling_leaves_no_directory(workdir: Path,
                                                             flink_cluster: Any) -> None:
    env = {"ULTRON_FLINK_PORT": str(flink_cluster.rest_port)}
    for name, flags, body in (
            ("imps", ["--kind", "topic", "--time", "ts", "--watermark", "1 s"],
             "imp_id BIGINT, ts TIMESTAMP(3)"),
            ("ok_first", [], OK_FIRST), ("bad_second", [], BAD_SECOND)):
        r = ultron(workdir, "node", name, "--flow", "f", *flags, stdin=body, env=env)
        assert r.returncode == 0, r.stderr
    home = workdir / ".ultron"
    before = row_hashes(home / "ultron.db")
    r = ultron(workdir, "run", "--flow", "f", "--name", "e1", env=env)
    one_line(r, "node 'bad_second'", "no_such_column", error="SqlError")
    assert row_hashes(home / "ultron.db") == before
    left = sorted(p.name for p in (home / "topics").iterdir()) if (home / "topics").is_dir() \
        else []
    assert left == [], left  # neither ok_first's compiled output nor the empty topic


@pytest.mark.slow
def test_a_10_mb_body_is_stored_once_however_many_versions_keep_it(workdir: Path) -> None:
    big = "X" * (10 * 1024 * 1024)
    (workdir / "big.py").write_text(f'DATA = "{big}"\n\n\ndef size():\n    return len(DATA)\n')
    r = ultron(workdir, "node", "size", "--flow", "f", "--kind", "python", "--body-file",
               "big.py")
    assert r.returncode == 0, r.stderr
    for name, body in (("a", "def a():\n    return 1\n"), ("b", "def b():\n    return 2\n"),
                       ("c", "def c():\n    return 3\n")):
        r = ultron(workdir, "node", name, "--flow", "f", "--kind", "python", stdin=body)
        assert r.returncode == 0, r.stderr
    home = workdir / ".ultron"
    r = ultron(workdir, "history", "f")
    assert [ln.split()[0] for ln in r.stdout.splitlines()[2:]] == ["1", "2", "3", "4"]
    files = [home / n for n in ("ultron.db", "ultron.db-wal", "ultron.db-shm")]
    size = sum(p.stat().st_size for p in files if p.exists())
    assert 10 * 2**20 < size < 11 * 2**20, size  # ~10 MB, not 4 x 10 MB
    rows = table_rows(home / "ultron.db")
    assert len(rows["node_bodies"]) == 4  # size, a, b, c: one row each
    assert sum(len(json.dumps(r[3])) for r in rows["flow_versions"]) < 20_000
    # Every version reads back whole.
    from ultron_nb.workspace import Workspace

    ws = Workspace(Settings(home=home))
    for version in (1, 2, 3, 4):
        assert ws.flow("f", version)["size"].body == big.join(
            ['DATA = "', '"\n\n\ndef size():\n    return len(DATA)'])


def test_a_version_2_store_migrates_bodies_and_forgets_credentials(workdir: Path) -> None:
    """A store written before schema 3 (bodies inline, targets with passwords) is migrated
    on first use: same flows, bodies by hash, no password left."""
    import sqlalchemy as sa

    from ultron_nb.store.db import Database
    from ultron_nb.store.schema import SCHEMA_VERSION

    url = f"sqlite:///{workdir / 'old.db'}"
    r = ultron(workdir, "--db-url", url, "node", "q", "--flow", "f", "--kind", "duckdb",
               stdin="SELECT 1 AS one")
    assert r.returncode == 0, r.stderr
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # back to what schema 2 wrote
        body = conn.execute(sa.text("SELECT body FROM node_bodies")).scalar_one()
        spec = json.loads(conn.execute(sa.text("SELECT spec FROM flow_versions")).scalar_one())
        spec["nodes"][0].pop("body_sha256")
        spec["nodes"][0]["body"] = body
        conn.execute(sa.text("UPDATE flow_versions SET spec = :s"), {"s": json.dumps(spec)})
        conn.execute(sa.text("DROP TABLE node_bodies"))
        conn.execute(sa.text("UPDATE ultron_meta SET value = '2' WHERE key = 'schema_version'"))
        conn.execute(sa.text(
            "INSERT INTO experiments (name, flow_name, flow_version, params, label, target, "
            "state, created_at, updated_at) VALUES ('e', 'f', 1, '{}', 'e', "
            "'http://admin:secret@127.0.0.1:8081', 'stopped', 0, 0)"))
    engine.dispose()
    db = Database(url)
    db.ensure_schema()
    with db.read() as conn:
        assert conn.execute(sa.text("SELECT target FROM experiments")).scalar_one() == \
            "http://127.0.0.1:8081"
        version = conn.execute(sa.text("SELECT value FROM ultron_meta")).scalar_one()
        assert version == str(SCHEMA_VERSION)
    db.dispose()
    r = ultron(workdir, "--db-url", url, "nodes", "f")
    assert r.returncode == 0 and "duckdb" in r.stdout, r.stderr
    assert b"secret" not in (workdir / "old.db").read_bytes()
