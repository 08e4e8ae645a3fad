"""Fill a real metadata store with recorded experiments (no Flink involved).

Used by the server tests and ``bench/panel_bench.py`` to have many experiments and nodes in
the store: each experiment runs flow ``wide`` (2 topics and a chain of Flink nodes), its
nodes recorded with jobs in ended states (finished, stopped with a savepoint, failed with an
error, canceled), some nodes shared from the first experiment, some launched on a URL with a
password (which the store keeps without it) — the mix a store holds after weeks of use.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from ultron_nb.flow import identities
from ultron_nb.flow.build import define_node
from ultron_nb.flow.plan import instance_id
from ultron_nb.services.datagen import clicklog_nodes
from ultron_nb.store import experiments as repo

ENDED = ("finished", "stopped", "failed", "canceled")


def define_wide_flow(ws: Any, flink_nodes: int = 8, flow: str = "wide") -> list[str]:
    """Flow ``flow``: impressions, clicks → n_0 → n_1 → ...; returns the node names."""
    for node in clicklog_nodes(partitions=2):
        ws.define(flow, node)
    names = ["impressions", "clicks"]
    prev = "impressions"
    for i in range(flink_nodes):
        name = f"n_{i}"
        ws.define(flow, define_node(name, f"SELECT imp_id, user_id, item_id, ts FROM {prev} "
                                          f"WHERE item_id <> '{i}'", params={"k": str(i)}))
        names.append(name)
        prev = name
    return names


def seed_experiments(ws: Any, count: int, *, target: str, flow: str = "wide",
                     prefix: str = "exp") -> list[str]:
    """``count`` experiments of ``flow`` with every node recorded; returns their names.

    Instances carry their real content identity. ``exp_000`` owns a full set; an odd one
    changes ``n_0`` (it shares the topics only), an even one changes the last node (it shares
    everything upstream of it) — with each experiment's jobs in an ended state.
    """
    f = ws.flow(flow)
    order = f.topological()
    last = [n for n in order if f[n].kind.value == "flink"][-1]
    names: list[str] = []
    owner: dict[str, str] = {}  # instance id -> the experiment that owns it
    with ws.db.write() as conn:
        for k in range(count):
            state = ENDED[k % len(ENDED)]
            exp_target = target if k % 3 else target.replace("://", "://bob:hunter2@", 1)
            name = f"{prefix}_{k:03d}"
            params = {} if k == 0 else {("n_0" if k % 2 else last) + ".k": f"v{k}"}
            ids = identities(f, f.effective_params(params))
            exp = repo.create_experiment(
                conn, name=name, flow_name=flow, flow_version=f.version, params=params,
                label=name, target=exp_target, state=state,
                parent=names[-1] if names and k % 4 == 1 else None)
            for node in order:
                inst_id = instance_id(node, ids[node], exp_target)
                if inst_id in owner:
                    repo.link_node(conn, exp.id, node, inst_id, shared_from=owner[inst_id])
                    continue
                resource = f[node].kind.value == "resource"
                repo.save_instance(conn, repo.InstanceRow(
                    id=inst_id, identity=ids[node], target=exp_target, node_name=node,
                    flow_name=flow, flow_version=f.version, params=f[node].param_dict,
                    upstream={}, output={"path": f"/tmp/topics/{inst_id}"},
                    state="ready" if resource else state))
                repo.link_node(conn, exp.id, node, inst_id)
                owner[inst_id] = name
                if not resource:
                    repo.add_job(
                        conn, instance_id=inst_id, engine="flink",
                        external_id=secrets.token_hex(16), target=exp_target, state=state,
                        savepoint=f"file:///tmp/sp/{inst_id}" if state == "stopped" else None,
                        error=("JobFailedError: java.lang.ArithmeticException: / by zero"
                               if state == "failed" else None))
            names.append(name)
    return names


def seed_quality(ws: Any, folder: Path, experiment: str) -> None:
    """Experiment ``experiment`` of flow ``q`` (a dataset → DuckDB node ``agg`` with rules
    ``unique(id)`` and ``v between 0 and 1``) whose finished run broke both, measured by the
    daemon's quality watcher (real DuckDB and store)."""
    import pandas as pd

    from ultron_nb.engines.quality_watcher import QualityWatcher
    from ultron_nb.flow.build import define_node
    from ultron_nb.services.quality import define_rules

    ws.define("q", define_node("src", "id BIGINT, v DOUBLE", kind="dataset",
                               path=str(folder / "src.parquet")))
    ws.define("q", define_node("agg", "SELECT id, v FROM src", kind="duckdb"))
    define_rules(ws, "q", "agg", "unique(id)\nv between 0 and 1")
    out = folder / f"{experiment}-agg"
    out.mkdir()
    pd.DataFrame({"id": [1, 2, 2], "v": [0.1, 0.5, 7.0]}).to_parquet(out / "part-0.parquet")
    flow = ws.flow("q")
    with ws.db.write() as conn:
        exp = repo.create_experiment(conn, name=experiment, flow_name="q",
                                     flow_version=int(flow.version or 0), params={},
                                     label=experiment, target="", state="running")
        inst = f"{experiment}.agg"
        repo.save_instance(conn, repo.InstanceRow(
            inst, "x", "", "agg", "q", int(flow.version or 0), {}, {},
            {"path": str(out), "format": "parquet"}, "finished"))
        repo.link_node(conn, exp.id, "agg", inst)
        job = repo.add_job(conn, instance_id=inst, engine="duckdb", external_id=None,
                           target="", state="running")
        repo.update_job(conn, job.id, state="finished")
    assert QualityWatcher(ws.db, interval=0).poll() == 2
