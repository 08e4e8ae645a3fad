"""Registry events through the real scheduler daemon and real Python nodes: a plain
MlflowClient in another process registers and moves aliases; nodes ``--on-model`` append a
line per run, so "ran once" is counted in side effects."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.scheduler.test_loop import launch
from tests.support.mlflow_store import RegistryClient
from tests.support.waiting import wait_until
from ultron_nb.config import Settings
from ultron_nb.engines.mlflow.center import ModelCenter
from ultron_nb.flow import Flow
from ultron_nb.flow.build import define_node
from ultron_nb.scheduler import daemon_status, start_daemon, stop_daemon
from ultron_nb.store import Database, open_database
from ultron_nb.store.schema import events, experiments

pytestmark = pytest.mark.slow

RECORD = '''
def run(ctx):
    import json, os, time
    event = ctx.trigger["event"]
    line = {"t": time.time(), "key": event["key"], "value": event["value"],
            "occurrence": ctx.trigger["occurrence"]}
    with open(os.path.join(ctx.params["out"], f"{ctx.experiment}.{ctx.node}.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\\n")
'''

TRAIN = '''
def run(ctx):
    import json, os
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    x = np.arange(40, dtype=float).reshape(20, 2)
    y = (x[:, 0] > 20).astype(int)
    v = ctx.log_model(LogisticRegression().fit(x, y), name="ctr_model", rows=20,
                      metrics={"auc": 0.75}, alias="champion")
    with open(os.path.join(ctx.params["out"], f"{ctx.experiment}.train.jsonl"), "a") as f:
        f.write(json.dumps({"version": v.version, "alias": v.alias}) + "\\n")
'''


@pytest.fixture
def daemon_settings(ms_settings: Settings) -> Iterator[Settings]:
    yield ms_settings
    pid = daemon_status(ms_settings)
    if pid and pid > 0:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def out(workdir: Path) -> Path:
    path = workdir / "effects"
    path.mkdir()
    return path


def node(name: str, out: Path, body: str = RECORD, **kw: Any) -> Any:
    return define_node(name, body, kind="python", params={"out": str(out)}, **kw)


def runs(out: Path, experiment: str, name: str) -> list[dict[str, Any]]:
    path = out / f"{experiment}.{name}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def model_events(db: Database, key: str) -> list[Any]:
    with db.read() as conn:
        return [json.loads(r.value) for r in conn.execute(
            select(events.c.value).where(events.c.key == key).order_by(events.c.id))]


def test_a_version_from_another_client_triggers_the_node_once(
        daemon_settings: Settings, registry_client: RegistryClient, out: Path) -> None:
    settings = daemon_settings
    db = open_database(settings.database_url)
    launch(db, Flow("f", [node("evaluate", out, on_model="ctr_model",
                               when="json:value['metrics']['auc'] > 0.7")]), "exp")
    start_daemon(settings)
    rc = registry_client
    first = rc("register", name="ctr_model", metrics={"auc": 0.8})
    wait_until(lambda: runs(out, "exp", "evaluate"), 120, "the evaluate node")
    rc("register", name="ctr_model", metrics={"auc": 0.6})  # the condition says no
    rc("register", name="ctr_model", metrics={"auc": 0.9})
    wait_until(lambda: len(runs(out, "exp", "evaluate")) >= 2, 60, "the second evaluation")
    assert stop_daemon(settings)
    done = runs(out, "exp", "evaluate")
    assert [r["value"]["version"] for r in done] == [1, 3]
    assert done[0]["value"]["run_id"] == first["run_id"]
    assert done[0]["key"] == "model/ctr_model/version" and done[0]["occurrence"] == "v1"
    assert [e["version"] for e in model_events(db, "model/ctr_model/version")] == [1, 2, 3]


def test_alias_set_moves_rollback_and_delete_each_fire_once(
        daemon_settings: Settings, registry_client: RegistryClient, out: Path) -> None:
    settings = daemon_settings
    db = open_database(settings.database_url)
    launch(db, Flow("f", [node("serve", out, on_model="ctr_model", alias="champion",
                               action="restart")]), "exp")
    start_daemon(settings)
    rc = registry_client
    for _ in range(3):
        rc("register", name="ctr_model")
    mc = ModelCenter(settings, db)
    steps = [lambda: mc.promote("ctr_model", 1, "champion"),
             lambda: rc("alias", name="ctr_model", alias="champion", version=3),
             lambda: mc.rollback("ctr_model", "champion"),  # back to 1
             lambda: rc("delete_alias", name="ctr_model", alias="champion")]
    for n, step in enumerate(steps, start=1):
        step()
        wait_until(lambda n=n: len(runs(out, "exp", "serve")) >= n, 120, f"alias change {n}")
    assert stop_daemon(settings)
    seen = [(r["value"]["version"], r["value"]["previous"], r["value"]["change"])
            for r in runs(out, "exp", "serve")]
    assert seen == [(1, None, "set"), (3, 1, "move"), (1, 3, "move"), (None, 1, "delete")]
    assert len(model_events(db, "model/ctr_model/alias/champion")) == 4


def test_a_daemon_killed_between_registrations_loses_and_repeats_nothing(
        daemon_settings: Settings, registry_client: RegistryClient, out: Path) -> None:
    settings = daemon_settings
    db = open_database(settings.database_url)
    launch(db, Flow("f", [node("evaluate", out, on_model="ctr_model"),
                          node("serve", out, on_model="ctr_model", alias="champion")]), "exp")
    rc = registry_client
    rng = random.Random(7)
    registered = 0
    for _ in range(4):
        pid = start_daemon(settings)
        for _ in range(rng.randint(1, 3)):
            registered = rc("register", name="ctr_model")["version"]
        rc("alias", name="ctr_model", alias="champion", version=registered)
        time.sleep(rng.uniform(0.1, 2.5))  # not synchronisation: the moment of the kill
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: daemon_status(settings) is None, 10, "the killed daemon's lock")
        registered = rc("register", name="ctr_model")["version"]  # while no daemon runs
    start_daemon(settings)
    wait_until(lambda: len(runs(out, "exp", "evaluate")) >= registered, 180,
               "every version's evaluation")
    aliases = model_events(db, "model/ctr_model/alias/champion")
    wait_until(lambda: len(runs(out, "exp", "serve")) >= len(aliases), 60, "serve runs")
    assert stop_daemon(settings)
    versions = sorted(r["value"]["version"] for r in runs(out, "exp", "evaluate"))
    assert versions == list(range(1, registered + 1))  # none lost, none twice
    assert [e["version"] for e in model_events(db, "model/ctr_model/version")] == \
        list(range(1, registered + 1))
    # Alias events: each one a real change (moves between two looks coalesce), each served
    # once, and the last one says where the alias is.
    assert 1 <= len(aliases) <= 4
    assert all(a["version"] != a["previous"] for a in aliases)
    assert [a["previous"] for a in aliases[1:]] == [a["version"] for a in aliases[:-1]]
    assert aliases[-1]["version"] == ModelCenter(settings, db).alias_version(
        "ctr_model", "champion")
    assert len(runs(out, "exp", "serve")) == len(aliases)


def test_a_pending_version_fires_nothing_until_it_is_ready(
        daemon_settings: Settings, registry_client: RegistryClient, out: Path) -> None:
    """Versions PENDING_REGISTRATION are made through the SQL store's ORM by the client
    (see tests/support/registry_client.py). A marker model registered after a pending
    version proves the daemon looked at the registry while the version was pending."""
    settings = daemon_settings
    db = open_database(settings.database_url)
    launch(db, Flow("f", [node("evaluate", out, on_model="ctr_model"),
                          node("probe", out, on_model="marker")]), "exp")
    start_daemon(settings)
    rc = registry_client
    pending = rc("pending", name="ctr_model")["version"]
    rc("register", name="marker")
    wait_until(lambda: runs(out, "exp", "probe"), 120, "the marker's node")
    assert runs(out, "exp", "evaluate") == [] and model_events(db, "model/ctr_model/version") == []
    rc("finish", name="ctr_model", version=pending)
    wait_until(lambda: runs(out, "exp", "evaluate"), 60, "the evaluation of the READY version")
    rc("register", name="marker")
    wait_until(lambda: len(runs(out, "exp", "probe")) >= 2, 60, "the second marker")
    assert stop_daemon(settings)
    assert [r["value"]["version"] for r in runs(out, "exp", "evaluate")] == [pending]
    assert [r["value"]["status"] for r in runs(out, "exp", "evaluate")] == ["READY"]


def test_a_clones_training_leaves_the_parents_champion_where_it_was(
        daemon_settings: Settings, out: Path) -> None:
    settings = daemon_settings
    db = open_database(settings.database_url)
    flow = Flow("f", [node("train", out, body=TRAIN, on_event="train/now"),
                      node("evaluate", out, on_model="ctr_model"),
                      node("serve", out, on_model="ctr_model", alias="champion")])
    launch(db, flow, "base")
    launch(db, flow, "lr2")
    with db.write() as conn:
        conn.execute(update(experiments).where(experiments.c.name == "lr2")
                     .values(parent="base"))
    start_daemon(settings)
    from ultron_nb.events import send_event

    send_event(db, "train/now", 1)
    wait_until(lambda: runs(out, "base", "train") and runs(out, "lr2", "train"), 180,
               "both trainings")
    (base_v,) = runs(out, "base", "train")
    (clone_v,) = runs(out, "lr2", "train")
    assert base_v["alias"] == "champion" and clone_v["alias"] == "champion--lr2"
    wait_until(lambda: len(runs(out, "lr2", "evaluate")) >= 2
               and runs(out, "base", "evaluate") and runs(out, "base", "serve")
               and len(runs(out, "lr2", "serve")) >= 2, 120, "the evaluations and serves")
    assert stop_daemon(settings)
    mc = ModelCenter(settings, db)
    assert mc.alias_version("ctr_model", "champion") == base_v["version"]
    assert mc.alias_version("ctr_model", "champion--lr2") == clone_v["version"]
    # The parent's nodes saw its own version and alias only; the clone's see its line and,
    # through its parent, the parent's.
    assert [r["value"]["version"] for r in runs(out, "base", "evaluate")] == [base_v["version"]]
    assert [r["key"] for r in runs(out, "base", "serve")] == ["model/ctr_model/alias/champion"]
    assert sorted(r["value"]["version"] for r in runs(out, "lr2", "evaluate")) == \
        sorted([base_v["version"], clone_v["version"]])
    assert sorted(r["key"] for r in runs(out, "lr2", "serve")) == [
        "model/ctr_model/alias/champion", "model/ctr_model/alias/champion--lr2"]
    lineage = mc.lineage("ctr_model", clone_v["version"])
    assert (lineage["experiment"], lineage["node"], lineage["instance"]) == \
        ("lr2", "train", "train_lr2")
