"""The registry watcher on a real MLflow SQLite store, changed by a plain MLflow client in
another process: one event per READY version and per alias change, none while pending,
none twice across restarts, nothing lost while no watcher ran."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from tests.support.mlflow_store import RegistryClient, install_store
from ultron_nb.config import Settings
from ultron_nb.engines.mlflow.center import ModelCenter
from ultron_nb.engines.mlflow.watcher import RegistryWatcher, state_name
from ultron_nb.events import recent
from ultron_nb.store import Database, open_database
from ultron_nb.store.schema import events, scheduler_state


class Watched(RegistryWatcher):
    """A watcher that keeps what it sent while a test waits for it to be ready."""

    early: list[Any]


def ready(watcher: RegistryWatcher, timeout: float = 120) -> Watched:
    """Poll until the watcher has read the registry once (mlflow imports in the background);
    what that first read sent is kept in ``early``."""
    early: list[Any] = []
    deadline = time.monotonic() + timeout
    while watcher.polls == 0:
        early += watcher.poll()
        if time.monotonic() > deadline:
            raise AssertionError("the watcher never read the registry")
        time.sleep(0.02)
    watcher.early = early  # type: ignore[attr-defined]
    return watcher  # type: ignore[return-value]


def poll_until(watcher: RegistryWatcher, condition: Callable[[list[Any]], bool],
               timeout: float = 30) -> list[Any]:
    """Poll, collecting sent events (from the first read on), until ``condition(events)``."""
    got: list[Any] = list(getattr(watcher, "early", []))
    watcher.early = []  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while not condition(got):
        got += watcher.poll()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; events so far: {[(e.key, e.value) for e in got]}")
        time.sleep(0.02)
    return got


def summary(sent: list[Any]) -> list[tuple[str, Any, Any]]:
    return [(e.key, e.value.get("version"), e.value.get("previous", e.value.get("status")))
            for e in sent]


def all_model_events(db: Database) -> list[tuple[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(select(events.c.key, events.c.value)
                            .where(events.c.key.like("model/%")).order_by(events.c.id)).all()
    return [(r.key, r.value) for r in rows]


def test_each_version_and_alias_change_is_one_event(
        ms_settings: Settings, registry_client: RegistryClient) -> None:
    db = open_database(ms_settings.database_url)
    watcher = ready(RegistryWatcher(db, ms_settings))
    assert watcher.poll() == []
    rc = registry_client
    v1 = rc("register", name="ctr_model", metrics={"auc": 0.8}, tags={"team": "ads"})
    sent = poll_until(watcher, lambda got: len(got) >= 1)
    assert summary(sent) == [("model/ctr_model/version", 1, "READY")]
    value = sent[0].value
    assert value["run_id"] == v1["run_id"] and value["metrics"] == {"auc": 0.8}
    assert value["tags"] == {"team": "ads"} and value["experiment"] is None
    assert sent[0].sender == "ultron.models"

    rc("register", name="ctr_model")
    rc("alias", name="ctr_model", alias="champion", version=1)
    sent = poll_until(watcher, lambda got: len(got) >= 2)
    assert summary(sent) == [("model/ctr_model/version", 2, "READY"),
                             ("model/ctr_model/alias/champion", 1, None)]
    rc("alias", name="ctr_model", alias="champion", version=2)
    assert summary(poll_until(watcher, lambda got: len(got) >= 1)) == [
        ("model/ctr_model/alias/champion", 2, 1)]
    ModelCenter(ms_settings, db).rollback("ctr_model", "champion", to=1)  # a rollback
    assert summary(poll_until(watcher, lambda got: len(got) >= 1)) == [
        ("model/ctr_model/alias/champion", 1, 2)]
    rc("delete_alias", name="ctr_model", alias="champion")
    deleted = poll_until(watcher, lambda got: len(got) >= 1)
    assert summary(deleted) == [("model/ctr_model/alias/champion", None, 1)]
    assert deleted[0].value["change"] == "delete"
    # A registry change that is no version nor alias (a tag) is read, and sends nothing.
    reads = watcher.polls
    ModelCenter(ms_settings, db).client.set_registered_model_tag("ctr_model", "owner", "x")
    deadline = time.monotonic() + 30
    while watcher.polls == reads and time.monotonic() < deadline:
        assert watcher.poll() == []
        time.sleep(0.02)
    assert watcher.polls == reads + 1
    # Idle: data_version does not move, the registry is not read.
    for _ in range(50):
        assert watcher.poll() == []
    assert watcher.polls == reads + 1
    assert [(k, v) for k, v in all_model_events(db)][-1][0] == "model/ctr_model/alias/champion"
    assert len(all_model_events(db)) == 6


def test_a_pending_version_is_announced_when_ready_and_a_failed_one_never(
        ms_settings: Settings, registry_client: RegistryClient) -> None:
    """The SQL store creates versions READY; the client creates PENDING_REGISTRATION ones
    through the store's own ORM models, as an asynchronous registry would, then finishes
    them. A later READY version (and a marker model) prove the watcher looked."""
    db = open_database(ms_settings.database_url)
    watcher = ready(RegistryWatcher(db, ms_settings))
    rc = registry_client
    pending = rc("pending", name="m")["version"]
    later = rc("register", name="m")["version"]
    doomed = rc("pending", name="m")["version"]
    rc("register", name="marker")
    sent = poll_until(watcher, lambda got: any(e.key == "model/marker/version" for e in got))
    assert summary(sent) == [("model/m/version", later, "READY"),
                             ("model/marker/version", 1, "READY")]
    rc("finish", name="m", version=doomed, status="FAILED_REGISTRATION")
    rc("finish", name="m", version=pending)
    sent = poll_until(watcher, lambda got: len(got) >= 1)
    assert summary(sent) == [("model/m/version", pending, "READY")]
    rc("register", name="marker")
    assert summary(poll_until(watcher, lambda got: len(got) >= 1)) == [
        ("model/marker/version", 2, "READY")]
    keys = [k for k, _ in all_model_events(db)]
    assert keys.count("model/m/version") == 2  # later, then pending: the failed one never


def test_restarts_repeat_nothing_and_lose_nothing(ms_settings: Settings,
                                                  registry_client: RegistryClient) -> None:
    db = open_database(ms_settings.database_url)
    rc = registry_client
    first = ready(RegistryWatcher(db, ms_settings))
    rc("register", name="m")
    rc("alias", name="m", alias="champion", version=1)
    poll_until(first, lambda got: len(got) >= 2)
    first.close()
    # While no watcher runs: two versions, a move and a new alias.
    rc("register", name="m")
    rc("register", name="m")
    rc("alias", name="m", alias="champion", version=3)
    rc("alias", name="m", alias="shadow", version=2)
    second = ready(RegistryWatcher(db, ms_settings))
    assert summary(poll_until(second, lambda got: len(got) >= 4)) == [
        ("model/m/version", 2, "READY"), ("model/m/version", 3, "READY"),
        ("model/m/alias/champion", 3, 1), ("model/m/alias/shadow", 2, None)]
    third = ready(RegistryWatcher(db, ms_settings))  # nothing changed: nothing to say
    assert third.poll() == []
    assert len(all_model_events(db)) == 6
    with db.read() as conn:
        cursor = conn.execute(select(scheduler_state.c.value).where(
            scheduler_state.c.name == state_name(second.store))).scalar_one()
    assert cursor["models"]["m"] == {"hi": 3, "waiting": [],
                                     "aliases": {"champion": 3, "shadow": 2}}


def test_a_registry_watched_for_the_first_time_starts_when_watching_began(
        ms_settings: Settings, registry_client: RegistryClient) -> None:
    db = open_database(ms_settings.database_url)
    registry_client("register", name="old")
    registry_client("alias", name="old", alias="champion", version=1)
    registry_client("pending", name="old")  # version 2, pending since before: news when READY
    watcher = RegistryWatcher(db, ms_settings)
    watcher.poll()  # watching begins (mlflow still imports in the background)
    registry_client("register", name="old")  # version 3
    registry_client("alias", name="old", alias="fresh", version=3)
    sent = poll_until(ready(watcher), lambda got: len(got) >= 2)
    assert summary(sent) == [("model/old/version", 3, "READY"),
                             ("model/old/alias/fresh", 3, None)]
    registry_client("finish", name="old", version=2)
    assert summary(poll_until(watcher, lambda got: len(got) >= 1)) == [
        ("model/old/version", 2, "READY")]
    assert len(all_model_events(db)) == 3


def test_a_registry_created_after_the_watcher_started_is_all_news(
        workdir: Any, mlflow_template: Any) -> None:
    settings = Settings(home=workdir / ".ultron")
    db = open_database(settings.database_url)
    watcher = RegistryWatcher(db, settings)
    assert watcher.poll() == [] and watcher.polls == 0  # no registry yet: nothing to read
    install_store(settings.home, mlflow_template)
    client = RegistryClient(settings.mlflow_tracking_uri, workdir / "art")
    try:
        client("register", name="first")
        deadline = time.monotonic() + 120
        while not recent(db, "model/first/version"):
            watcher.poll()
            assert time.monotonic() < deadline, "the first version was never announced"
            time.sleep(0.02)
    finally:
        client.close()
    for _ in range(20):
        watcher.poll()
    assert [e.value["version"] for e in recent(db, "model/first/version")] == [1]


def test_a_new_version_among_a_thousand_is_announced_alone(ms_settings: Settings) -> None:
    """A poll reads one model search plus the versions above the cursor, whatever the
    registry holds."""
    versions = 1000
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    db = open_database(ms_settings.database_url)
    uri = ms_settings.mlflow_tracking_uri
    mc = ModelCenter(ms_settings, db)
    mc.client.create_registered_model("big")
    store = SqlAlchemyStore(uri)
    now = int(time.time() * 1000)
    with store.ManagedSessionMaker(read_only=False) as session:  # bulk: 1,000 READY versions
        session.add_all([store._with_workspace_field(SqlModelVersion(
            name="big", version=n, creation_time=now, last_updated_time=now,
            source=f"/x/{n}", status="READY")) for n in range(1, versions + 1)])
    watcher = ready(RegistryWatcher(db, ms_settings))
    mc.client.create_model_version("big", "/x/new")
    sent = poll_until(watcher, lambda got: len(got) >= 1)
    assert summary(sent) == [("model/big/version", versions + 1, "READY")]


def test_the_sqlite_read_agrees_with_mlflows_search(ms_settings: Settings) -> None:
    from ultron_nb.engines.mlflow.registry import ChangeProbe, read_models

    client = ModelCenter(ms_settings, open_database(ms_settings.database_url)).client
    client.create_registered_model("empty")
    client.create_registered_model("m")
    for n in range(4):
        client.create_model_version("m", f"/x/{n}")
    client.set_registered_model_alias("m", "champion", "2")
    client.set_registered_model_alias("m", "shadow", "3")
    client.delete_model_version("m", "4")  # deleted: not the top any more
    probe = ChangeProbe(ModelCenter(ms_settings).store)
    assert probe.changed()
    fast = probe.models(client)
    assert fast == read_models(client)
    assert fast["m"].top == 3 and fast["m"].aliases == {"champion": 2, "shadow": 3}
    assert fast["empty"].top == 0 and fast["empty"].aliases == {}
    probe.close()


def test_a_registry_without_data_version_is_read_every_interval() -> None:
    from ultron_nb.engines.mlflow.registry import ChangeProbe
    from ultron_nb.engines.mlflow.store import MlflowStore

    probe = ChangeProbe(MlflowStore("http://127.0.0.1:9", Settings().home), interval=0.2)
    assert probe.changed() and not probe.changed()
    deadline = time.monotonic() + 5
    while not probe.changed():
        assert time.monotonic() < deadline
        time.sleep(0.02)
