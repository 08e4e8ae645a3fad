"""The savepoint lineage table: the schema 4 migration keeps the savepoints stopped jobs
took before it, and the `savepoints` verb shows them as a tree (the real CLI)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from tests.faults.faults import ultron
from ultron_nb.store import experiments as repo
from ultron_nb.store import savepoints as sp_repo
from ultron_nb.store.db import Database
from ultron_nb.store.schema import SCHEMA_VERSION


def _stopped_family(db: Database, location: Path) -> None:
    """Experiment base (its join stopped with a savepoint at ``location``) and its clone."""
    with db.write() as conn:
        base = repo.create_experiment(conn, name="base", flow_name="orders", flow_version=2,
                                      params={}, label="base", target="http://127.0.0.1:1",
                                      state="stopped")
        repo.create_experiment(conn, name="fork", flow_name="orders", flow_version=3,
                               params={}, label="fork", target="http://127.0.0.1:1",
                               state="running", parent="base")
        repo.save_instance(conn, repo.InstanceRow(
            id="refund_join_abc", identity="abc", target="http://127.0.0.1:1",
            node_name="refund_join", flow_name="orders", flow_version=2, params={},
            upstream={}, output={}, state="stopped"))
        repo.link_node(conn, base.id, "refund_join", "refund_join_abc")
        job = repo.add_job(conn, instance_id="refund_join_abc", engine="flink",
                           external_id="f00", target="http://127.0.0.1:1", state="running")
        repo.update_job(conn, job.id, state="stopped", savepoint=f"file:{location}",
                        ended_at=1.0)


def test_a_version_3_store_keeps_its_savepoints_and_the_verb_shows_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = Database(url)
    db.ensure_schema()
    kept = tmp_path / "savepoint-1"
    kept.mkdir()
    (kept / "_metadata").write_bytes(b"x")
    _stopped_family(db, kept)
    with db.write() as conn:  # back to what schema 3 had: no savepoints table
        conn.execute(sa.text("DROP TABLE savepoints"))
        conn.execute(sa.text("UPDATE ultron_meta SET value = '3' WHERE key = 'schema_version'"))
    db.dispose()

    db = Database(url)
    db.ensure_schema()
    with db.read() as conn:
        [row] = sp_repo.of_experiments(conn, ["base"])
        version = conn.execute(sa.text("SELECT value FROM ultron_meta")).scalar_one()
    assert version == str(SCHEMA_VERSION)
    assert (row.experiment, row.node_name, row.flow_version, row.parent, row.operators) == \
        ("base", "refund_join", 2, None, None)
    assert row.location == f"file:{kept}"
    db.dispose()

    r = ultron(tmp_path, "--db-url", url, "savepoints", "fork")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "savepoints of fork's lineage"
    base_at = next(i for i, ln in enumerate(lines) if ln.startswith("base"))
    fork_at = next(i for i, ln in enumerate(lines) if "└─ fork ◀" in ln)
    sp_line = lines[base_at + 1].split()
    assert sp_line[:2] == [str(row.id), "refund_join"] and "ok" in sp_line and "start" in sp_line
    assert fork_at == base_at + 2  # the clone under its parent, after the parent's savepoint

    (kept / "_metadata").unlink()  # deleted by hand: said so
    r = ultron(tmp_path, "--db-url", url, "savepoints", "base")
    assert r.returncode == 0 and "deleted" in r.stdout.splitlines()[base_at + 1], r.stdout
