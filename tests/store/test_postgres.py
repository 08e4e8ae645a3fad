"""The metadata store on a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from ultron_nb import Workspace
from ultron_nb.errors import FlowError
from ultron_nb.flow.build import define_node

from .test_store import _writer


def test_flows_versions_and_transactions_on_postgres(postgres_db: str, workdir: object) -> None:
    ws = Workspace(db_url=postgres_db)
    assert not ws.db.is_sqlite
    ws.define("f", define_node("events", "k STRING, ts TIMESTAMP(3)", kind="topic", time="ts"))
    ws.define("f", define_node("j", "SELECT k FROM events"))
    with pytest.raises(FlowError):
        ws.define("f", define_node("bad", "SELECT * FROM nowhere"))
    assert [h["change"] for h in ws.history("f")] == ["define events", "define j"]
    assert Workspace(db_url=postgres_db).flow("f")["j"].body == "SELECT k FROM events"


def test_concurrent_processes_on_postgres(postgres_db: str, workdir: object) -> None:
    Workspace(db_url=postgres_db).db  # noqa: B018 - create the schema once
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(postgres_db, w, 10)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    flow = Workspace(db_url=postgres_db).flow("shared")
    assert len(flow) == 30 and flow.version == 30
