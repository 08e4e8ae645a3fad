"""The metadata store: versions, transactions, schema version, concurrent processes."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
from sqlalchemy import select, update

from ultron_nb import Workspace
from ultron_nb.errors import FlowError, NotFoundError, SchemaVersionError
from ultron_nb.flow.build import define_node
from ultron_nb.store import Database
from ultron_nb.store.schema import SCHEMA_VERSION, flow_versions, meta


def _topic(name: str = "events") -> object:
    return define_node(name, "k STRING, ts TIMESTAMP(3)", kind="topic", time="ts")


def test_every_change_is_a_new_version_and_history_is_kept(workspace: Workspace) -> None:
    workspace.define("f", _topic())
    workspace.define("f", define_node("j", "SELECT k FROM events"))
    workspace.define("f", define_node("j", "SELECT k, ts FROM events"))
    workspace.define("f", define_node("j", "SELECT k, ts FROM events"))  # unchanged: no version
    assert [h["change"] for h in workspace.history("f")] == [
        "define events", "define j", "redefine j"]
    assert workspace.flow("f").version == 3
    assert workspace.flow("f", 2)["j"].body == "SELECT k FROM events"
    workspace.remove("f", "j")
    assert workspace.flow("f").names == ["events"]
    assert workspace.flow("f", 3).names == ["events", "j"]


def test_a_failed_command_leaves_the_store_unchanged(workspace: Workspace) -> None:
    workspace.define("f", _topic())
    before = workspace.history("f")
    with pytest.raises(FlowError):
        workspace.define("f", define_node("bad", "SELECT * FROM nowhere"))
    with pytest.raises(FlowError):
        workspace.remove("f", "nope")
    workspace.define("f", define_node("j", "SELECT k FROM events"))
    with pytest.raises(FlowError):
        workspace.remove("f", "events")
    assert workspace.history("f")[: len(before)] == before
    assert len(workspace.history("f")) == len(before) + 1
    with pytest.raises(NotFoundError, match="no flow named 'g' \\(flows: f\\)"):
        workspace.flow("g")


def test_settings_place_the_store(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ULTRON_HOME", str(workdir / "elsewhere"))
    ws = Workspace()
    ws.define("f", _topic())
    assert (workdir / "elsewhere" / "ultron.db").is_file()
    (workdir / "pyproject.toml").write_text('[tool.ultron_nb]\nhome = "proj"\n')
    monkeypatch.delenv("ULTRON_HOME")
    assert Workspace().settings.home == (workdir / "proj").resolve()


def test_a_newer_schema_is_refused(workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'u.db'}"
    db = Database(url)
    db.ensure_schema()
    with db.write() as conn:
        conn.execute(update(meta).values(value=str(SCHEMA_VERSION + 1)))
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        Database(url).ensure_schema()


def test_an_older_schema_without_migration_is_refused(workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'u.db'}"
    db = Database(url)
    db.ensure_schema()
    with db.write() as conn:
        conn.execute(update(meta).values(value="0"))
    with pytest.raises(SchemaVersionError, match="version 0, which cannot be migrated"):
        Database(url).ensure_schema()


def _writer(url: str, worker: int, count: int) -> None:
    from ultron_nb.flow.build import define_node as dn
    from ultron_nb.workspace import Workspace as Ws

    ws = Ws(db_url=url)
    for i in range(count):
        ws.define("shared", dn(f"w{worker}_{i}", "k STRING", kind="dataset"))


def test_concurrent_processes_lose_nothing(workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'c.db'}"
    Database(url).ensure_schema()
    workers, count = 4, 15
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ws = Workspace(db_url=url)
    flow = ws.flow("shared")
    assert len(flow) == workers * count
    assert flow.version == workers * count
    with Database(url).read() as conn:
        versions = [r[0] for r in conn.execute(select(flow_versions.c.version))]
    assert sorted(versions) == list(range(1, workers * count + 1))
