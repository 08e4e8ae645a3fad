"""The model center on a real MLflow SQLite store: lineage, aliases, scopes, verbs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError
from sklearn.linear_model import LogisticRegression
from sqlalchemy import insert

from ultron_nb.config import Settings, load_settings
from ultron_nb.engines.mlflow.center import Lineage, ModelCenter
from ultron_nb.engines.mlflow.store import MlflowStore, engine_error, mask_uri
from ultron_nb.errors import ConfigError, FlowError, NotFoundError
from ultron_nb.events.model_keys import alias_key, version_key
from ultron_nb.flow import Flow
from ultron_nb.flow.build import define_node
from ultron_nb.runners.context import NodeContext
from ultron_nb.services.models import clone_note
from ultron_nb.store import Database, open_database
from ultron_nb.store.schema import experiments
from ultron_nb.workspace import Workspace

HOUR_MS = 3_600_000


def record_experiment(db: Database, name: str, *, parent: str | None = None,
                      label: str | None = None) -> None:
    now = time.time()
    with db.write() as conn:
        conn.execute(insert(experiments).values(
            name=name, flow_name="ctr", flow_version=3, params={}, label=label or name,
            target="local", state="running", parent=parent, created_at=now, updated_at=now))


def context(settings: Settings, experiment: str, *, node: str = "train", attempt: int = 1,
            window: tuple[int, int] | None = None, params: dict[str, str] | None = None,
            inputs: dict[str, Any] | None = None) -> NodeContext:
    trigger: dict[str, Any] = {"id": 7, "edge": "after:samples", "occurrence": "wm7200000"}
    if window:
        trigger.update(window_start=window[0], window_end=window[1])
    return NodeContext(experiment=experiment, node=node, instance_id=f"{node}_{experiment}",
                       attempt=attempt, params=params or {}, inputs=inputs or {}, output=None,
                       trigger=trigger, home=settings.home,
                       log_path=settings.home / "logs" / "x.log",
                       db_url=settings.database_url, flow="ctr", flow_version=3)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.random((200, 3))
    return x, (x[:, 0] + 0.2 * rng.random(200) > 0.6).astype(int)


@pytest.fixture
def db(ms_settings: Settings) -> Database:
    return open_database(ms_settings.database_url)


def fit(data: tuple[np.ndarray, np.ndarray], c: float = 1.0) -> LogisticRegression:
    return LogisticRegression(C=c).fit(*data)


# ----------------------------------------------------------------------------- lineage
def test_log_model_records_a_run_and_a_version_with_its_lineage(
        ms_settings: Settings, db: Database, workdir: Path, data: Any) -> None:
    record_experiment(db, "base", label="A")
    record_experiment(db, "other")
    samples = workdir / "samples"
    ctx = context(ms_settings, "base", window=(HOUR_MS, 2 * HOUR_MS), params={"lr": "0.1"},
                  inputs={"samples": {"path": str(samples)}})
    model = fit(data)
    v = ctx.log_model(model, name="ctr_model", metrics={"auc": 0.71}, rows={"samples": 200})
    assert (v.name, v.version, v.experiment, v.alias) == ("ctr_model", 1, "base", None)
    context(ms_settings, "other", node="fit").log_model(fit(data, 0.5), name="ctr_model")

    mc = ModelCenter(ms_settings, db)
    lineage = mc.lineage("ctr_model", 1)
    assert {k: lineage[k] for k in ("experiment", "label", "flow", "flow_version", "node",
                                    "instance", "attempt", "trigger", "window_start",
                                    "window_end", "window", "rows", "params", "inputs",
                                    "metrics", "run_id")} == {
        "experiment": "base", "label": "A", "flow": "ctr", "flow_version": "3",
        "node": "train", "instance": "train_base", "attempt": "1", "trigger": "wm7200000",
        "window_start": str(HOUR_MS), "window_end": str(2 * HOUR_MS),
        "window": "1970-01-01T01:00:00Z/1970-01-01T02:00:00Z", "rows": {"samples": 200},
        "params": {"lr": "0.1"}, "inputs": {"samples": str(samples)},
        "metrics": {"auc": 0.71}, "run_id": v.run_id}
    assert lineage["home"] == str(ms_settings.home)

    # The run lives in the MLflow experiment named after the ultron experiment, with its
    # artifacts under the home; the version's source is that run's model.
    client = mc.client
    exp = client.get_experiment_by_name("base")
    assert exp is not None
    assert exp.artifact_location.startswith(str(ms_settings.home / "mlflow" / "artifacts"))
    run = client.get_run(v.run_id)
    assert run.info.experiment_id == exp.experiment_id and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1"} and run.data.metrics == {"auc": 0.71}
    assert v.source.startswith(exp.artifact_location) and Path(v.source, "MLmodel").is_file()
    # From the experiment, its versions (and only its own).
    assert [int(x.version) for x in mc.versions(experiment="base")] == [1]
    assert [int(x.version) for x in mc.versions(experiment="other")] == [2]
    assert [int(x.version) for x in mc.versions("ctr_model")] == [2, 1]
    # The model comes back as it was logged; and MLflow's global default was never used.
    loaded = mc.load("ctr_model", version=1, native=True)
    assert (loaded.predict(data[0]) == model.predict(data[0])).all()
    assert (mc.load("ctr_model", version=1).predict(data[0]) == model.predict(data[0])).all()
    assert not (workdir / "mlflow.db").exists() and not (workdir / "mlruns").exists()


def test_any_object_that_predicts_is_logged_and_bad_input_is_one_line(
        ms_settings: Settings, db: Database) -> None:
    record_experiment(db, "base")
    ctx = context(ms_settings, "base")

    class Threshold:
        def __init__(self, cut: float):
            self.cut = cut

        def predict(self, x: Any) -> Any:
            return (np.asarray(x)[:, 0] > self.cut).astype(int)

    v = ctx.log_model(Threshold(0.5), name="rule")
    back = ModelCenter(ms_settings, db).load("rule", version=v.version, native=True)
    assert back.cut == 0.5
    with pytest.raises(ConfigError, match="has no predict or predict_proba"):
        ctx.log_model(object(), name="rule")
    with pytest.raises(ConfigError, match="model name 'a/b'"):
        ctx.log_model(Threshold(1), name="a/b")
    with pytest.raises(ConfigError, match="alias 'latest'"):
        ctx.log_model(Threshold(1), name="rule", alias="latest")
    assert [int(x.version) for x in ModelCenter(ms_settings, db).versions("rule")] == [1]


# ----------------------------------------------------------------------------- aliases
def test_promote_and_rollback_follow_the_alias_history(ms_settings: Settings,
                                                       db: Database, data: Any) -> None:
    record_experiment(db, "base")
    mc = ModelCenter(ms_settings, db)
    for c in (1.0, 0.5, 0.2):
        mc.register(fit(data, c), name="m", lineage=Lineage("base", node="train"))
    for version in (1, 2, 3):
        assert mc.promote("m", version, "champion") == "champion"
    assert [h["version"] for h in mc.history("m", "champion")] == [1, 2, 3]
    assert mc.rollback("m", "champion") == ("champion", 2, 3)
    assert mc.alias_version("m", "champion") == 2
    assert mc.rollback("m", "champion") == ("champion", 1, 2)
    with pytest.raises(NotFoundError, match="no earlier holder"):
        mc.rollback("m", "champion")
    assert mc.alias_version("m", "champion") == 1
    assert mc.rollback("m", "champion", to=3) == ("champion", 3, 1)
    assert mc.rollback("m", "champion") == ("champion", 1, 3)
    # Another client moved the alias behind ultron's back: rollback undoes that move.
    mc.client.set_registered_model_alias("m", "champion", "2")
    assert mc.rollback("m", "champion") == ("champion", 1, 2)
    with pytest.raises(NotFoundError, match="has no version 9"):
        mc.promote("m", 9, "champion")
    with pytest.raises(NotFoundError, match="no registered model 'nope'"):
        mc.promote("nope", 1, "champion")
    assert mc.alias_version("m", "champion") == 1


def test_a_clone_sets_its_own_aliases_and_reads_its_parents_until_then(
        ms_settings: Settings, db: Database, data: Any) -> None:
    record_experiment(db, "base")
    record_experiment(db, "lr2", parent="base")
    record_experiment(db, "lr3", parent="base")
    record_experiment(db, "lr2b", parent="lr2")
    base = context(ms_settings, "base").log_model(fit(data), name="m", alias="champion")
    clone = context(ms_settings, "lr2").log_model(fit(data, 0.1), name="m", alias="champion")
    assert (base.alias, clone.alias) == ("champion", "champion--lr2")
    mc = ModelCenter(ms_settings, db)
    assert mc.alias_version("m", "champion") == base.version == 1  # the parent's: untouched
    assert mc.alias_version("m", "champion--lr2") == clone.version == 2
    assert mc.resolve("m", "champion", experiment="lr2") == (2, "champion--lr2")
    assert mc.resolve("m", "champion", experiment="lr2b") == (2, "champion--lr2")
    assert mc.resolve("m", "champion", experiment="lr3") == (1, "champion")  # inherited
    assert mc.resolve("m", "champion") == (1, "champion")
    with pytest.raises(NotFoundError, match="no alias 'gold' for experiment 'lr3'"):
        mc.resolve("m", "gold", experiment="lr3")
    # A clone's node moves the parent's alias only when it names the parent.
    clone_models = context(ms_settings, "lr2").models
    assert clone_models.promote("m", 2, "champion") == "champion--lr2"
    assert mc.alias_version("m", "champion") == 1
    assert clone_models.promote("m", 2, "champion", experiment="base") == "champion"
    assert mc.alias_version("m", "champion") == 2


def test_clone_note_says_which_models_a_clone_trains(ms_settings: Settings, db: Database,
                                                     data: Any) -> None:
    ws = Workspace(ms_settings)
    assert clone_note(ws, "base", "lr2", ["train"]) == [
        "models: aliases set by lr2's nodes are its own (e.g. champion--lr2); aliases of base "
        "untouched"]
    record_experiment(db, "base")
    context(ms_settings, "base", node="train").log_model(fit(data), name="ctr_model")
    context(ms_settings, "base", node="teacher").log_model(fit(data), name="teacher_model")
    flow = Flow("ctr", [define_node("evaluate", "def run(ctx):\n    pass\n", kind="python",
                                    on_model="ctr_model")])
    assert clone_note(ws, "base", "lr2", ["train"], flow) == [
        "models: lr2 trains its own versions of ctr_model (node train); aliases of base "
        "untouched",
        "models: teacher_model comes from base's shared node teacher; lr2 reads base's "
        "aliases",
        "models: evaluate (on model/ctr_model/version) is shared with base: it sees base's "
        "versions of ctr_model only"]


# ----------------------------------------------------------------------------- edges
def test_on_model_is_an_event_edge_on_the_registry_keys() -> None:
    body = "def run(ctx):\n    pass\n"
    node = define_node("evaluate", body, kind="python", on_model="ctr_model",
                       when="json:value['metrics']['auc'] > 0.7")
    (edge,) = node.triggers
    assert edge.event_key == version_key("ctr_model") == "model/ctr_model/version"
    assert edge.condition == "json:value['metrics']['auc'] > 0.7"
    serve = define_node("serve", body, kind="python", on_model="ctr_model", alias="champion",
                        action="restart")
    assert serve.triggers[0].event_key == alias_key("ctr_model", "champion")
    with pytest.raises(FlowError, match="node 'x': --alias needs --on-model NAME"):
        define_node("x", body, kind="python", alias="champion")
    with pytest.raises(FlowError, match="give --on-model or --on-event, not both"):
        define_node("x", body, kind="python", on_model="m", on_event="k")
    with pytest.raises(FlowError, match="--on-model 'a/b'"):
        define_node("x", body, kind="python", on_model="a/b")
    with pytest.raises(FlowError, match="--alias 'a b'"):
        define_node("x", body, kind="python", on_model="m", alias="a b")


# ----------------------------------------------------------------------------- settings
def test_the_store_is_under_the_home_unless_a_uri_is_set(workdir: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         cell: Any) -> None:
    magic = cell("__ultron_magic")
    team = f"sqlite:///{workdir / 'team.db'}"
    try:
        cell(f"%config UltronMagic.mlflow_uri = {team!r}")
        assert magic.mlflow_uri == team
        assert magic.workspace.settings.mlflow_uri == team
    finally:
        cell("%config UltronMagic.mlflow_uri = ''")
    assert magic.workspace.settings.mlflow_uri == ""
    s = load_settings()
    assert s.mlflow_tracking_uri == f"sqlite:///{workdir / '.ultron' / 'mlflow' / 'mlflow.db'}"
    assert MlflowStore.of(s).sqlite_path == workdir / ".ultron" / "mlflow" / "mlflow.db"
    (workdir / "pyproject.toml").write_text(
        '[tool.ultron_nb]\nmlflow_uri = "http://mlflow.team:5000"\n')
    assert load_settings().mlflow_uri == "http://mlflow.team:5000"
    monkeypatch.setenv("ULTRON_MLFLOW_URI", "https://bot:s3cret@mlflow.team")
    store = MlflowStore.of(load_settings())
    assert store.is_server and store.artifact_root is None and store.sqlite_path is None
    assert store.safe_uri == "https://bot:***@mlflow.team"
    error = engine_error("log_model 'm'", RuntimeError(f"cannot reach {store.uri}"), store)
    assert "s3cret" not in str(error) and "bot:***@mlflow.team" in str(error)
    assert mask_uri("postgresql://u:pw@db/x") == "postgresql://u:***@db/x"
    assert mask_uri("https://token@host/") == "https://***@host/"
    assert mask_uri("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


# ----------------------------------------------------------------------------- verbs
def test_verbs_list_promote_roll_back_and_show(ms_settings: Settings, db: Database,
                                               data: Any, cell: Any) -> None:
    record_experiment(db, "base")
    record_experiment(db, "lr2", parent="base")
    for experiment in ("base", "base", "lr2"):
        context(ms_settings, experiment).log_model(fit(data), name="ctr_model",
                                                   metrics={"auc": 0.7}, rows=200)
    assert str(cell("%ultron model promote ctr_model 1 --alias champion")) == \
        "model ctr_model: alias champion → version 1"
    cell("%ultron model promote ctr_model 2 --alias champion")
    cell("%ultron model promote ctr_model 3 --alias champion --experiment lr2")
    table = cell("%ultron models ctr_model")
    assert [r[:4] for r in table.rows] == [
        ["ctr_model", 3, "champion--lr2", "lr2"], ["ctr_model", 2, "champion", "base"],
        ["ctr_model", 1, "", "base"]]
    assert table.rows[0][4:9] == ["train", "ctr v3", "", "200", "auc=0.7"]
    assert list(table.df.columns)[:3] == ["model", "version", "aliases"]
    assert [r[1] for r in cell("%ultron models --experiment base").rows] == [2, 1]
    assert str(cell("%ultron model rollback ctr_model --alias champion")) == \
        "model ctr_model: alias champion rolled back to version 1 (was 2)"
    shown = dict((r[0], r[1]) for r in cell("%ultron model show ctr_model 3").rows)
    assert shown["experiment"] == "lr2" and shown["instance"] == "train_lr2"
    with pytest.raises(UsageError, match=r"^NotFoundError: no registered model 'nope'"):
        cell("%ultron model promote nope 1 --alias champion")
    with pytest.raises(UsageError, match="the following arguments are required: --alias"):
        cell("%ultron model rollback ctr_model")
    with pytest.raises(UsageError, match=r"^NotFoundError: no experiment 'lr9'"):
        cell("%ultron model promote ctr_model 2 --alias champion --experiment lr9")
    assert ModelCenter(ms_settings, db).alias_version("ctr_model", "champion") == 1


def test_an_mlflow_failure_is_one_line_with_the_uri_masked(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, cell: Any) -> None:
    monkeypatch.setenv("ULTRON_MLFLOW_URI", "bogus://bot:s3cret@registry")
    with pytest.raises(UsageError) as caught:
        cell("%ultron models")
    text = str(caught.value)
    assert text.startswith("EngineError: MLflow (bogus://bot:***@registry): ")
    assert "s3cret" not in text and "\n" not in text
