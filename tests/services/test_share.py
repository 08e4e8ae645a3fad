"""Sharing an experiment as a notebook: no secret of the author's machine in the file; the
round trip — export, run the notebook with nbclient in a fresh home against a real local
cluster — gives identical node identities and equal outputs on the same generated data (the
CTR flow, with a clone in its lineage); and the node cells of a flow of another shape (a
chain of Flink nodes, a Python and a DuckDB node with triggers) import with the same
identities."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest

from tests.conftest import run_cell
from tests.conftest_flink import cancel_workspace_jobs
from tests.experiments.rides import define_rides
from tests.services.flink_flows import define_ctr_flow
from ultron_nb import experiments as ex
from ultron_nb.config import Settings
from ultron_nb.errors import UltronError
from ultron_nb.flow.build import define_node
from ultron_nb.flow.identity import identities
from ultron_nb.scheduler import daemon_status, stop_daemon
from ultron_nb.services.clone import clone
from ultron_nb.services.datagen import clicklog_nodes, gen_clicklog
from ultron_nb.services.quality import define_rules
from ultron_nb.services.share import export_notebook
from ultron_nb.store import experiments as repo
from ultron_nb.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]


def _instance_ids(ws: Workspace, experiment: str) -> dict[str, str]:
    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, experiment)
        return {v.member.node_name: v.instance.identity for v in repo.node_views(conn, exp.id)}


# ---------------------------------------------------------------- no secrets
def test_an_exported_notebook_carries_no_secret_of_the_author(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_db: str, ip: Any) -> None:
    author = tmp_path / "alice"
    monkeypatch.setenv("HOME", str(author))
    monkeypatch.setenv("ULTRON_API_TOKEN", "tok-9f8e7d6c5b4a3f2e1d")
    flink_url = "http://admin:s3cr3t-flink@flink.corp.example:8081"
    base, _, query = postgres_db.partition("?")
    db_url = base.replace("postgres:@", "postgres:pg-Pa55w0rd@", 1) + "?" + query
    assert "pg-Pa55w0rd" in db_url
    socket_dir = query.split("host=", 1)[1].split("&")[0]
    ws = Workspace(Settings(home=author / "proj" / ".ultron", db_url=db_url,
                            flink_url=flink_url))
    for node in clicklog_nodes(partitions=2):
        ws.define("ctr", node)
    ws.define("ctr", define_node("history", "imp_id BIGINT, ts TIMESTAMP(3)", kind="dataset",
                                 path=str(author / "data" / "history")))
    ws.define("ctr", define_node(
        "joined", "SELECT i.imp_id, i.ts FROM impressions i JOIN history h "
        "ON i.imp_id = h.imp_id", mode="batch", bounded=True))
    ws.define("ctr", define_node("report", "def report(ctx):\n    return 1", kind="python",
                                 inputs=["joined"], params={"out": str(ws.home / "reports")},
                                 after=["joined"]))
    flow = ws.flow("ctr")
    with ws.db.write() as conn:  # an experiment that ran on the remote cluster
        repo.create_experiment(conn, name="remote_1", flow_name="ctr",
                               flow_version=flow.version, params={}, label="remote_1",
                               target=flink_url, state="stopped")
    result = export_notebook(ws, "remote_1", tmp_path / "out" / "remote_1.ipynb")
    text = result.path.read_text()
    for secret in ("s3cr3t-flink", "admin:", "flink.corp.example", "pg-Pa55w0rd",
                   socket_dir, "tok-9f8e7d6c5b4a3f2e1d", str(author), str(ws.home)):
        assert secret not in text, secret
    nb = nbformat.reads(text, as_version=4)
    sources = [c.source for c in nb.cells]
    assert any('%config UltronMagic.flink_url = ""' in s for s in sources)  # to fill in
    # The nodes that held the author's paths are named, and recorded with no identity.
    assert sorted(result.changed_nodes) == ["history", "report"]
    ids = identities(flow)
    assert nb.metadata["ultron"]["identities"] == {
        n: ids[n] for n in flow.names if n not in ("history", "report")}
    assert "~/data/history" in text and "<ultron-home>/reports" in text

    # Imported into a fresh home, the untouched nodes have the same identities.
    monkeypatch.setenv("HOME", str(tmp_path / "bob"))
    table = run_cell(ip, f"%ultron import {result.path}")
    same = {r[0]: r[3] for r in table.rows}
    assert same == {"impressions": "same", "clicks": "same", "history": "",
                    "joined": "DIFFERENT", "report": ""}  # joined reads the changed history


# ---------------------------------------------------------------- round trips
@pytest.fixture
def homes(tmp_path: Path, flink_cluster: Any, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[Workspace, Workspace]]:
    """The author's workspace and a colleague's fresh one, on the same local cluster (the
    colleague's notebook sees it as a cluster at a URL); schedulers stopped afterwards."""
    port = flink_cluster.rest_port
    author = Workspace(Settings(home=tmp_path / "author" / ".ultron", flink_port=port))
    fresh = Workspace(Settings(home=tmp_path / "colleague" / ".ultron",
                               flink_url=f"http://127.0.0.1:{port}"))
    monkeypatch.setenv("ULTRON_HOME", str(fresh.home))
    monkeypatch.setenv("ULTRON_FLINK_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("ULTRON_DB_URL", raising=False)
    try:
        yield author, fresh
    finally:
        for ws in (author, fresh):
            cancel_workspace_jobs(ws)
            pid = daemon_status(ws.settings)
            try:
                stop_daemon(ws.settings, timeout=20)
            except Exception:
                if pid and pid > 0:
                    os.kill(pid, signal.SIGKILL)


def run_notebook(path: Path, workdir: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def rows_of(ws: Workspace, experiment: str, node: str, key: list[str]) -> pd.DataFrame:
    frame = ex.preview(ws, node, experiment=experiment, limit=10**7)
    frame = frame[sorted(frame.columns)]
    return frame.sort_values(key).reset_index(drop=True)


def settle(read: Callable[[], Any], timeout: float, what: str, *, quiet: float = 6.0) -> Any:
    """Poll ``read`` until it returns something non-empty that stays the same for ``quiet``
    seconds (outputs complete: nothing more to come from the data there is)."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        value = read()
        if value is not None and last is not None and _same(value, last):
            if time.monotonic() - since >= quiet:
                return value
        else:
            last, since = value, time.monotonic()
        time.sleep(1.0)
    raise AssertionError(f"{what} did not settle within {timeout:.0f} s (last: {last!r})")


def reach(read: Callable[[], tuple[Any, Any]], timeout: float, what: str) -> Any:
    """Poll ``read`` (the original's outputs, the copy's) until both are there and equal."""
    deadline = time.monotonic() + timeout
    value: tuple[Any, Any] = (None, None)
    while time.monotonic() < deadline:
        value = read()
        if value[0] is not None and value[1] is not None and _same(*value):
            return value[1]
        time.sleep(1.0)
    raise AssertionError(f"{what} did not reach the original's within {timeout:.0f} s "
                         f"(copy: {value[1]!r}, original: {value[0]!r})")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, pd.DataFrame):
        return a.equals(b)
    return bool(a == b)


def _outputs(ws: Workspace, experiment: str, keys: dict[str, list[str]]) -> Any:
    """Every node's output, sorted; None while one has none yet."""
    try:
        frames = {n: rows_of(ws, experiment, n, k) for n, k in keys.items()}
    except UltronError:  # a node that has not run yet
        return None
    return frames if all(len(f) for f in frames.values()) else None


@pytest.mark.flink
@pytest.mark.slow
@pytest.mark.timeout(900)  # two experiments launched twice on a shared 2-core machine
def test_the_ctr_flow_and_its_lineage_round_trip(homes: tuple[Workspace, Workspace],
                                                 tmp_path: Path) -> None:
    author, fresh = homes
    for ws in (author, fresh):  # the same generated data in both homes
        gen_clicklog(ws.settings, rate=4, duration=240, partitions=2, seed=21)
    define_ctr_flow(author, "ctr", partitions=2, label_window="1")
    ex.launch(author, "ctr", name="base")
    clone(author, "base", "lw2", {"label_join.label_window": "2"})
    keys = {"label_join": ["imp_id"], "ctr_minute": ["window_start"]}
    same = {"label_join": ["imp_id"]}  # outputs that do not depend on timing
    for e in ("base", "lw2"):
        settle(lambda e=e: _outputs(author, e, keys), 300, f"{e}'s outputs")

    path = export_notebook(author, "lw2", tmp_path / "lw2.ipynb").path
    nb = run_notebook(path, tmp_path / "colleague")
    sources = "\n".join(c.source for c in nb.cells)
    assert "%ultron clone base lw2 --set label_join.label_window=2" in sources
    assert "%ultron diff base lw2" in sources
    for name in ("base", "lw2"):
        assert _instance_ids(fresh, name) == _instance_ids(author, name)
        flow = fresh.flow("ctr")
        exp = ex.experiment_row(fresh, name)
        assert identities(flow, flow.effective_params(exp.params)) == _instance_ids(author,
                                                                                     name)
        # The author's jobs still run: both sides reach the same label_join, row for row.
        # ctr_minute reads label_join's part files as a stream, and a row that reaches it
        # behind its watermark is dropped, so its counts depend on timing (on both sides
        # alike): only that the copy's windows fire is checked.
        reach(lambda n=name: (_outputs(author, n, same), _outputs(fresh, n, same)), 300,
              f"the copy of {name}")
        settle(lambda n=name: _outputs(fresh, n, keys), 120, f"the copy of {name}'s windows",
               quiet=0)
    diff = [o for c in nb.cells if c.source.startswith("%ultron diff")
            for o in c.get("outputs", [])]
    assert "shared" in json.dumps(diff)  # the clone shares the unchanged topics


@pytest.mark.flink
def test_the_rides_flow_imports_with_the_same_identities(tmp_path: Path, ip: Any) -> None:
    """A chain of Flink nodes, a Python and a DuckDB node with triggers and a boundary: the
    node cells of the export define, in a fresh home, nodes of the same identities."""
    author = Workspace(Settings(home=tmp_path / "author" / ".ultron"))
    define_rides(author, tmp_path / "ledger")
    define_rules(author, "rides", "samples", "unique(req_id)\nrows between 1 and 10000",
                 window="1h")
    flow = author.flow("rides")
    with author.db.write() as conn:  # an experiment that ran with a parameter changed
        repo.create_experiment(conn, name="r", flow_name="rides", flow_version=flow.version,
                               params={"accept_window": "4"}, label="r",
                               target=author.settings.local_flink_url, state="stopped")
    path = export_notebook(author, "r", tmp_path / "r.ipynb").path
    assert "%ultron run --name r --param accept_window=4" in path.read_text()
    table = run_cell(ip, f"%ultron import {path}")  # the fresh home of the testing shell
    assert {r[0]: r[3] for r in table.rows} == {n: "same" for n in flow.names}
    fresh = Workspace(Settings(home=tmp_path / ".ultron")).flow("rides")
    want = identities(flow, flow.effective_params({"accept_window": "4"}))
    assert identities(fresh, fresh.effective_params({"accept_window": "4"})) == want
    assert fresh.rules == flow.rules and fresh.rules["samples"][0].window == "1h"
