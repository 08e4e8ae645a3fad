"""The side panel's API over a real store (SQLite) and a real Jupyter server: listings read
the store only, errors are one-line JSON, credentials never leave the server, a dead or a
hanging Flink cluster is reported, not waited for."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ultron_nb.events import send_event
from ultron_nb.store import experiments as repo

from .conftest import get_json
from .seed import define_wide_flow, seed_experiments, seed_quality


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_listings_come_from_the_store(jp_fetch: Any, ws: Any) -> None:
    define_wide_flow(ws)
    names = seed_experiments(ws, 6, target=f"http://127.0.0.1:{closed_port()}")
    send_event(ws.db, "model/ctr", {"version": 3})
    send_event(ws.db, "status/exp_000/n_0", {"state": "finished"})

    code, flows = await get_json(jp_fetch, "ultron", "api", "flows")
    assert code == 200
    assert [(f["name"], f["nodes"]) for f in flows] == [("wide", 10)]
    assert flows[0]["version"] == ws.flow("wide").version

    code, exps = await get_json(jp_fetch, "ultron", "api", "experiments")
    assert code == 200
    assert [e["name"] for e in exps] == names[::-1]  # newest first
    recorded = {e.name: e.state for e in repo_list(ws)}
    assert {e["name"]: e["state"] for e in exps} == recorded
    assert exps[-1]["flow"] == "wide" and exps[-1]["parent"] is None
    assert any(e["parent"] for e in exps)
    body = json.dumps(exps)
    # A target given with a password is stored without its credentials (schema 3).
    assert "hunter2" not in body and "bob" not in body

    code, only = await get_json(jp_fetch, "ultron", "api", "experiments", params={"flow": "x"})
    assert (code, only) == (200, [])

    code, flow = await get_json(jp_fetch, "ultron", "api", "flows", "wide")
    assert code == 200
    assert [n["name"] for n in flow["nodes"]] == ws.flow("wide").topological()
    assert flow["nodes"][2] == {"name": "n_0", "kind": "flink", "label": "flink stream",
                                "stream": True, "inputs": ["impressions"],
                                "params": {"k": "0"}, "triggers": [], "description": ""}
    assert [v["version"] for v in flow["versions"]] == list(range(1, flow["version"] + 1))

    code, events = await get_json(jp_fetch, "ultron", "api", "events",
                                  params={"key": "status/*", "limit": "5"})
    assert code == 200 and [e["key"] for e in events] == ["status/exp_000/n_0"]
    code, events = await get_json(jp_fetch, "ultron", "api", "events", params={"limit": "1"})
    assert [e["value"] for e in events] == [{"state": "finished"}]


def repo_list(ws: Any) -> list[Any]:
    with ws.db.read() as conn:
        return repo.list_experiments(conn)


async def test_the_dag_is_svg_coloured_by_recorded_states(jp_fetch: Any, ws: Any) -> None:
    define_wide_flow(ws, flink_nodes=2)
    seed_experiments(ws, 4, target=f"http://127.0.0.1:{closed_port()}")
    response = await jp_fetch("ultron", "api", "flows", "wide", "dag.svg",
                              params={"experiment": "exp_002"})
    assert response.headers["Content-Type"] == "image/svg+xml"
    svg = response.body.decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "exp_002: failed" in svg  # the title carries the experiment's live state
    # exp_002 changed its last node n_1 (failed); it shares n_0 from exp_000 (finished).
    assert svg.count("#ff8787") == 1 and svg.count("#a5d8ff") == 1
    assert "shared" in svg


async def test_an_experiment_shows_nodes_jobs_links_and_errors(jp_fetch: Any, ws: Any) -> None:
    define_wide_flow(ws, flink_nodes=3)
    seed_experiments(ws, 4, target=f"http://127.0.0.1:{closed_port()}")
    code, st = await get_json(jp_fetch, "ultron", "api", "experiments", "exp_002")
    assert code == 200
    assert st["state"] == "failed" and st["flow"] == "wide"
    assert [n["node"] for n in st["nodes"]] == ws.flow("wide").topological()
    flink = [n for n in st["nodes"] if n["kind"].startswith("flink")]
    assert len(flink) == 3 and len(st["jobs"]) == 3
    shared = [n for n in flink if n["shared_from"]]
    assert [(n["node"], n["shared_from"], n["state"]) for n in shared] == [
        ("n_0", "exp_000", "finished"), ("n_1", "exp_000", "finished")]
    for n in flink:
        if n not in shared:
            assert n["state"] == "failed" and "ArithmeticException" in n["error"]
        assert n["web_url"].endswith(f"/#/job/completed/{n['job_id']}/overview")
    # exp_000 was launched on a URL with a password: stored, shown and linked without it.
    code, st0 = await get_json(jp_fetch, "ultron", "api", "experiments", "exp_000")
    assert "hunter2" not in json.dumps(st0) and "bob" not in json.dumps(st0)
    assert st0["target"].startswith("http://127.0.0.1:")
    assert all(j["web_url"].startswith("http://127.0.0.1:") for j in st0["jobs"])


async def test_a_dead_flink_cluster_is_named(jp_fetch: Any, ws: Any) -> None:
    define_wide_flow(ws, flink_nodes=1)
    port = closed_port()
    seed_experiments(ws, 1, target=f"http://127.0.0.1:{port}")
    with ws.db.write() as conn:  # recorded as running: the status must ask Flink
        repo.set_experiment_state(conn, "exp_000", "running")
        exp = repo.get_experiment(conn, "exp_000")
        for m in repo.members(conn, exp.id):
            job = repo.latest_job(conn, m.instance_id)
            if job:
                repo.update_job(conn, job.id, state="running")
    t0 = time.monotonic()
    code, st = await get_json(jp_fetch, "ultron", "api", "experiments", "exp_000")
    assert time.monotonic() - t0 < 5
    assert code == 200
    assert f"cannot reach Flink at http://127.0.0.1:{port}" in st["message"]
    assert [n["state"] for n in st["nodes"] if n["job_id"]] == ["unknown"]


@pytest.fixture
def hanging_flink() -> Iterator[int]:
    """A port that accepts connections and never answers (a Flink that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


@pytest.fixture
def panel_settings() -> dict[str, Any]:
    return {"flink_timeout": 1.5}


async def test_a_hanging_flink_never_blocks_the_server(
        jp_fetch: Any, ws: Any, hanging_flink: int) -> None:
    define_wide_flow(ws, flink_nodes=1)
    seed_experiments(ws, 1, target=f"http://127.0.0.1:{hanging_flink}")
    with ws.db.write() as conn:
        exp = repo.get_experiment(conn, "exp_000")
        repo.set_experiment_state(conn, "exp_000", "running")
        for m in repo.members(conn, exp.id):
            job = repo.latest_job(conn, m.instance_id)
            if job:
                repo.update_job(conn, job.id, state="running")
    t0 = time.monotonic()
    slow = asyncio.ensure_future(get_json(jp_fetch, "ultron", "api", "experiments", "exp_000"))
    await asyncio.sleep(0.3)  # the slow request is now waiting on Flink
    assert not slow.done()
    t1 = time.monotonic()
    code, exps = await get_json(jp_fetch, "ultron", "api", "experiments")
    assert code == 200 and exps[0]["name"] == "exp_000"
    assert time.monotonic() - t1 < 1.0  # the listing did not wait for Flink
    code, body = await slow
    waited = time.monotonic() - t0
    assert code == 504
    assert body["error"] == (f"TimeoutError: Flink cluster at http://127.0.0.1:"
                             f"{hanging_flink} does not answer (no answer within 1.5 s)")
    assert 1.4 < waited < 4


async def test_errors_are_one_line_json(jp_fetch: Any, ws: Any) -> None:
    define_wide_flow(ws, flink_nodes=1)
    seed_experiments(ws, 2, target=f"http://127.0.0.1:{closed_port()}")
    cases: list[tuple[tuple[str, ...], dict[str, Any], int, str]] = [
        (("experiments", "nope"), {}, 404, "NotFoundError: no experiment named 'nope'"),
        (("flows", "nope"), {}, 404, "NotFoundError: no flow named 'nope' (flows: wide)"),
        (("flows", "nope", "dag.svg"), {}, 404, "NotFoundError: no flow named 'nope'"),
        (("no", "such", "thing"), {}, 404, "NotFoundError: no ultron API route 'no/such/thing'"),
        (("events",), {"params": {"limit": "lots"}}, 400,
         "ValueError: limit must be an integer from 1 to 1000, not 'lots'"),
        (("models", "ctr", "versions"), {}, 404,
         "NotFoundError: no model 'ctr' in the model center"),
        (("experiments", "exp_000", "stop"), {"method": "POST", "body": "{not json"}, 400,
         "ValueError: the request body is not JSON"),
        (("experiments", "exp_000", "stop"), {"method": "POST", "body": '{"savepoint": "y"}'},
         400, "ValueError: 'savepoint' must be true or false, not 'y'"),
        (("experiments", "exp_000", "clone"), {"method": "POST", "body": "{}"}, 400,
         "ValueError: 'name' is required"),
        (("experiments", "exp_000", "clone"),
         {"method": "POST", "body": '{"name": "exp_001", "set": {"n_0.k": "5"}}'}, 400,
         "ConfigError: an experiment named 'exp_001' exists already"),
        (("experiments", "exp_000", "clone"),
         {"method": "POST", "body": '{"name": "c", "set": ["n_0.k"]}'}, 400,
         "FlowError: set 'n_0.k': expected KEY=VALUE"),
        (("experiments", "exp_000", "clone"),
         {"method": "POST", "body": '{"name": "c", "from_savepoints": ["7"]}'}, 400,
         "ValueError: 'from_savepoints' must list savepoint ids"),
        (("experiments", "exp_000", "clone"),
         {"method": "POST", "body": '{"name": "c", "from_savepoints": [424242]}'}, 404,
         "NotFoundError: --from-savepoint 424242: no such savepoint"),
        (("experiments", "exp_000", "nodes", "impressions", "restart"),
         {"method": "POST", "body": "{}"}, 400,
         "ConfigError: node 'impressions' is a resource: it has nothing to restart"),
        (("experiments", "exp_001", "resume"), {"method": "POST", "body": "{}"}, 503,
         "ClusterError: "),
    ]
    for parts, kwargs, status, start in cases:
        code, body = await get_json(jp_fetch, "ultron", "api", *parts, **kwargs)
        assert code == status, (parts, code, body)
        assert list(body) == ["error"], body
        assert body["error"].startswith(start), (parts, body)
        assert "\n" not in body["error"] and "Traceback" not in body["error"]
    # Nothing of the above changed the store.
    assert [e.name for e in repo_list(ws)] == ["exp_001", "exp_000"]


async def test_a_clone_dry_run_returns_the_plan_and_stores_nothing(jp_fetch: Any,
                                                                   ws: Any) -> None:
    define_wide_flow(ws, flink_nodes=3)
    seed_experiments(ws, 1, target=f"http://127.0.0.1:{closed_port()}")
    code, body = await get_json(jp_fetch, "ultron", "api", "experiments", "exp_000", "clone",
                                method="POST",
                                body=json.dumps({"name": "c1", "set": {"n_1.k": "9"}}))
    assert code == 200, body
    assert body["dry_run"] is True
    plan = {n["node"]: n["plan"] for n in body["plan"]["nodes"]}
    # n_1 changed: it and its downstream are new; n_0 is unchanged but its instance ended,
    # so it starts as a new generation (never into the ended one's output), saying why; the
    # topics' data is there (shared).
    assert plan == {"impressions": "shared", "clicks": "shared", "n_0": "new",
                    "n_1": "new", "n_2": "new"}
    reasons = {n["node"]: n["why"] for n in body["plan"]["nodes"]}
    assert reasons["n_0"].startswith("relaunch ("), reasons
    assert reasons["n_1"] == "parameters changed", reasons
    assert body["plan"]["overrides"]["n_1.k"] == "9"
    assert [e.name for e in repo_list(ws)] == ["exp_000"]


# ---------------------------------------------------------------- model center
def register_versions(ws: Any, count: int) -> None:
    """``count`` versions of model ``ctr_lr`` in the workspace's (real, SQLite) MLflow store."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from ultron_nb.engines.mlflow.center import Lineage, ModelCenter

    rng = np.random.default_rng(5)
    x = rng.random((80, 2))
    y = (x[:, 0] > 0.5).astype(int)
    mc = ModelCenter(ws.settings, ws.db)
    for c in range(1, count + 1):
        mc.register(LogisticRegression(C=float(c)).fit(x, y), name="ctr_lr",
                    lineage=Lineage("exp_000", node="train", flow="wide", window=(0, 60_000)))


async def test_the_panel_lists_models_and_promotes_a_version(jp_fetch: Any, ws: Any) -> None:
    # No model center yet: an empty list, and none is created by asking.
    code, models = await get_json(jp_fetch, "ultron", "api", "models")
    assert (code, models) == (200, [])
    assert not (ws.home / "mlflow").exists()

    register_versions(ws, 2)
    code, models = await get_json(jp_fetch, "ultron", "api", "models")
    assert code == 200
    assert [m["name"] for m in models] == ["ctr_lr"]
    versions = models[0]["versions"]
    assert [v["version"] for v in versions] == [2, 1]  # newest first
    assert versions[0]["aliases"] == [] and versions[0]["experiment"] == "exp_000"
    assert versions[0]["node"] == "train" and versions[0]["flow"] == "wide"

    code, moved = await get_json(jp_fetch, "ultron", "api", "models", "ctr_lr", "promote",
                                 method="POST", body=json.dumps({"version": 1,
                                                                 "alias": "champion"}))
    assert code == 200, moved
    assert moved["alias"] == "champion" and moved["version"] == 1
    from ultron_nb.engines.mlflow.center import ModelCenter

    assert ModelCenter(ws.settings, ws.db).alias_version("ctr_lr", "champion") == 1
    code, one = await get_json(jp_fetch, "ultron", "api", "models", "ctr_lr", "versions")
    assert code == 200
    assert {v["version"]: v["aliases"] for v in one["versions"]} == {2: [], 1: ["champion"]}

    # Mistakes: one line each, and the alias stays where it was.
    cases = [
        (("models", "ctr_lr", "promote"), '{"version": 9, "alias": "champion"}', 404,
         "NotFoundError: model 'ctr_lr' has no version 9"),
        (("models", "ctr_lr", "promote"), '{"version": 2, "alias": "no way"}', 400,
         "ConfigError: alias 'no way': letters, digits"),
        (("models", "ctr_lr", "promote"), '{"version": "2", "alias": "champion"}', 400,
         "ValueError: 'version' must be an integer"),
        (("models", "nope", "promote"), '{"version": 1, "alias": "champion"}', 404,
         "NotFoundError: "),
    ]
    for parts, body, status, start in cases:
        code, answer = await get_json(jp_fetch, "ultron", "api", *parts, method="POST",
                                      body=body)
        assert (code, list(answer)) == (status, ["error"]), (parts, code, answer)
        assert answer["error"].startswith(start), answer
        assert "\n" not in answer["error"]
    code, answer = await get_json(jp_fetch, "ultron", "api", "models", "nope", "versions")
    assert (code, answer) == (404, {"error": "NotFoundError: no model 'nope' in the model "
                                             "center"})
    assert ModelCenter(ws.settings, ws.db).alias_version("ctr_lr", "champion") == 1


async def test_the_savepoints_a_clone_can_branch_from(jp_fetch: Any, ws: Any,
                                                      tmp_path: Any) -> None:
    from ultron_nb.store import savepoints as sp_repo

    define_wide_flow(ws)
    seed_experiments(ws, 3, target=f"http://127.0.0.1:{closed_port()}")
    kept = tmp_path / "sp-kept"
    kept.mkdir()
    (kept / "_metadata").write_bytes(b"x")
    with ws.db.write() as conn:
        exp = repo.get_experiment(conn, "exp_000")
        view = {v.member.node_name: v for v in repo.node_views(conn, exp.id)}["n_0"]
        job = repo.latest_job(conn, view.instance.id)
        assert job is not None
        for location in (kept.as_uri(), (tmp_path / "sp-gone").as_uri(),
                         "hdfs://bob:hunter2@nn:8020/sp/1"):
            sp_repo.record(conn, location=location, job_id=job.id,
                           instance_id=view.instance.id, parent=None, operators=None)
    code, sps = await get_json(jp_fetch, "ultron", "api", "experiments", "exp_000",
                               "savepoints")
    assert code == 200, sps
    assert [(s["experiment"], s["node"]) for s in sps] == [("exp_000", "n_0")] * 3
    assert [s["exists"] for s in sps] == [None, False, True]  # newest first
    assert "hunter2" not in json.dumps(sps) and sps[0]["location"].startswith("hdfs://bob:")
    assert all(isinstance(s["id"], int) and s["flow_version"] == ws.flow("wide").version
               for s in sps)
    # exp_001 is a clone of exp_000: the family's savepoints, its own (none) first.
    code, family = await get_json(jp_fetch, "ultron", "api", "experiments", "exp_001",
                                  "savepoints")
    assert code == 200 and [s["id"] for s in family] == [s["id"] for s in sps]
    code, answer = await get_json(jp_fetch, "ultron", "api", "experiments", "nope",
                                  "savepoints")
    assert code == 404 and answer["error"].startswith("NotFoundError: no experiment named "
                                                      "'nope' (recent: exp_002")


async def test_an_experiments_data_quality(jp_fetch: Any, ws: Any, tmp_path: Any) -> None:
    """Rules, last values, violations and the node to look at first, as the daemon's quality
    watcher measured them (a DuckDB node's finished run, real DuckDB and store)."""
    seed_quality(ws, tmp_path, "qe")
    code, q = await get_json(jp_fetch, "ultron", "api", "experiments", "qe", "quality")
    assert code == 200, q
    assert {r["rule"]: (r["node"], r["state"], r["windows"], r["failed"]) for r in q["rules"]} \
        == {"unique_id": ("agg", "FAILING", 1, 1), "range_v": ("agg", "FAILING", 1, 1)}
    assert q["failing"] == {"agg": ["range_v", "unique_id"]} and q["look_first"] == ["agg"]
    assert sorted(v["rule"] for v in q["violations"]) == ["range_v", "unique_id"]
    assert all(v["node"] == "agg" for v in q["violations"])
    code, answer = await get_json(jp_fetch, "ultron", "api", "experiments", "nope", "quality")
    assert code == 404 and answer["error"].startswith("NotFoundError: no experiment named")
