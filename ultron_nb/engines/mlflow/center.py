"""The model center: MLflow versions with their lineage, aliases scoped per experiment.

A Python node registers a model through its context::

    def train(ctx):
        model = ...fit on ctx.input_frame("samples")...
        ctx.log_model(model, name="ctr_model", metrics={"auc": auc}, rows=len(frame),
                      alias="candidate")

That records an MLflow run in the MLflow experiment named after the ultron experiment and a
version of registered model ``ctr_model`` tagged with its lineage (``ultron.*`` tags: the
experiment, label, flow and flow version, node, instance, attempt, trigger, parameters,
inputs, the event-time window of the data, row counts). :meth:`ModelCenter.lineage` reads
a version's lineage back; :meth:`ModelCenter.versions` lists an experiment's versions.

**Clone isolation**: an alias set by a node belongs to the experiment that runs the node.
A root experiment sets the plain alias (``champion``); a clone ``lr2`` sets
``champion--lr2``; reading ``champion`` from ``lr2`` finds its own, else its parent's (see
:mod:`ultron_nb.events.model_keys`). A node moves another experiment's alias only when it
names that experiment (``ctx.models.promote(..., experiment="base")``); a user moves any
with ``%ultron model promote NAME VERSION --alias A [--experiment EXP]``.

**Alias history**: every promote and rollback through ultron appends to the registered
model tag ``ultron.alias_history.<alias>``, so a rollback knows the previous holder.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ultron_nb.config import Settings, load_settings
from ultron_nb.engines.mlflow.store import (
    ALREADY_EXISTS,
    DOES_NOT_EXIST,
    MlflowStore,
    check_name,
    engine_error,
    error_code,
)
from ultron_nb.errors import ConfigError, NotFoundError
from ultron_nb.events.model_keys import alias_scopes, scope_chain, scoped_alias
from ultron_nb.store import experiments as repo
from ultron_nb.store import open_database

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ultron_nb.store import Database

log = logging.getLogger(__name__)

TAG = "ultron."
HISTORY_TAG = "ultron.alias_history."
HISTORY_KEEP = 50  # entries kept per alias (a registered model tag holds 5,000 characters)


@dataclass(frozen=True)
class Lineage:
    """Where a model version comes from (its ``ultron.*`` tags)."""

    experiment: str
    node: str = ""
    flow: str = ""
    flow_version: int = 0
    instance: str = ""
    attempt: int = 0
    trigger: str = ""
    label: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)
    window: tuple[int, int] | None = None
    rows: int | Mapping[str, int] | None = None
    home: str = ""

    def tags(self) -> dict[str, str]:
        tags = {"experiment": self.experiment, "node": self.node, "flow": self.flow,
                "flow_version": str(self.flow_version), "instance": self.instance,
                "attempt": str(self.attempt), "trigger": self.trigger, "label": self.label,
                "home": self.home}
        if self.params:
            tags["params"] = json.dumps(dict(self.params), sort_keys=True)
        if self.inputs:
            tags["inputs"] = json.dumps(dict(self.inputs), sort_keys=True)
        if self.window is not None:
            start, end = self.window
            tags["window_start"], tags["window_end"] = str(start), str(end)
            tags["window"] = f"{_iso(start)}/{_iso(end)}"
        if self.rows is not None:
            tags["rows"] = json.dumps(self.rows if isinstance(self.rows, int)
                                      else {str(k): int(v) for k, v in self.rows.items()})
        if not self.flow_version:
            del tags["flow_version"]
        return {TAG + k: v for k, v in tags.items() if v != ""}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RegisteredVersion:
    """A version just registered (what ``ctx.log_model`` returns)."""

    name: str
    version: int
    run_id: str
    source: str
    experiment: str
    alias: str | None = None  # the registry alias moved to it, if any

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def __str__(self) -> str:
        moved = f", alias {self.alias}" if self.alias else ""
        return (f"model {self.name} version {self.version} (experiment {self.experiment}, "
                f"run {self.run_id}{moved})")


class ModelCenter:
    """The model registry of a workspace, seen from ``experiment`` (None: a user, whose
    aliases are the plain ones)."""

    def __init__(self, settings: Settings, db: Database | None = None, *,
                 experiment: str | None = None):
        self.settings = settings
        self.store = MlflowStore.of(settings)
        self._db = db
        self.experiment = experiment

    # ------------------------------------------------------------------ plumbing
    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = open_database(self.settings.database_url)
        return self._db

    @property
    def client(self) -> MlflowClient:
        return self.store.client()

    def _parents(self) -> dict[str, str | None]:
        with self.db.read() as conn:
            return repo.parents(conn)

    def chain(self, experiment: str | None) -> tuple[str, ...]:
        """``experiment``, its parent, ..., its root (() for a user)."""
        if not experiment:
            return ()
        parents = self._parents()
        if experiment not in parents:
            raise NotFoundError(f"no experiment {experiment!r} (aliases are scoped by the "
                                "experiments of this workspace)")
        return scope_chain(experiment, parents)

    def alias_for(self, alias: str, experiment: str | None = None) -> str:
        """The registry alias that ``alias`` means when ``experiment`` (default: this
        center's) sets it: plain for a root experiment or a user, ``alias--<clone>`` for a
        clone."""
        experiment = experiment if experiment is not None else self.experiment
        chain = self.chain(experiment)
        return scoped_alias(_check_alias(alias), chain[0] if len(chain) > 1 else None)

    # ------------------------------------------------------------------ registering
    def register(self, model: Any = None, *, name: str, lineage: Lineage,
                 metrics: Mapping[str, float] | None = None,
                 params: Mapping[str, Any] | None = None, alias: str | None = None,
                 flavor: str = "auto", path: str | Path | None = None,
                 tags: Mapping[str, str] | None = None) -> RegisteredVersion:
        """Record a run of ``lineage.experiment`` and register ``model`` (or the MLflow model
        directory at ``path``) as a new version of ``name`` tagged with ``lineage``; with
        ``alias``, move the experiment's alias to it."""
        from mlflow.entities import Metric, Param

        check_name(name)
        if alias is not None:
            _check_alias(alias)
        if model is None and path is None:
            raise ConfigError(f"log_model {name!r}: pass the model, or path= of a saved one")
        if path is None:
            from ultron_nb.engines.mlflow import flavors

            flavors.check(model, flavor)
        client = self.client
        lineage_tags = lineage.tags()
        exp_id = self.store.experiment_id(lineage.experiment, {
            TAG + "experiment": lineage.experiment, TAG + "flow": lineage.flow})
        run_name = f"{lineage.node or 'model'}-{lineage.attempt}" if lineage.node else None
        run = client.create_run(exp_id, run_name=run_name, tags={
            **lineage_tags, "mlflow.source.name": f"ultron:{lineage.experiment}/{lineage.node}",
            **{str(k): str(v) for k, v in (tags or {}).items()}})
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(str(k), float(v), now, 0)
                                              for k, v in (metrics or {}).items()],
                             params=[Param(str(k), str(v)[:6000])
                                     for k, v in {**lineage.params, **(params or {})}.items()])
            with tempfile.TemporaryDirectory(prefix="ultron-model-") as tmp:
                if path is None:
                    from ultron_nb.engines.mlflow import flavors

                    used = flavors.save(model, Path(tmp) / "model", flavor)
                    client.log_artifacts(run_id, str(Path(tmp) / "model"), "model")
                else:
                    used = "saved"
                    client.log_artifacts(run_id, str(path), "model")
            source = f"{run.info.artifact_uri.rstrip('/')}/model"
            self._ensure_model(name)
            version = client.create_model_version(
                name, source, run_id=run_id,
                tags={**lineage_tags, TAG + "flavor": used,
                      **{str(k): str(v) for k, v in (tags or {}).items()}})
            client.set_terminated(run_id, "FINISHED")
        except Exception as exc:
            client.set_terminated(run_id, "FAILED")
            if isinstance(exc, ConfigError):
                raise
            raise engine_error(f"log_model {name!r} ({self.store.safe_uri})", exc,
                               self.store) from exc
        number = int(version.version)
        moved = None
        if alias:
            moved = self.promote(name, number, alias, experiment=lineage.experiment,
                                 by=f"{lineage.experiment}/{lineage.node}")
        log.info("registered %s version %d (run %s)", name, number, run_id)
        return RegisteredVersion(name, number, run_id, source, lineage.experiment, moved)

    def _ensure_model(self, name: str) -> None:
        try:
            self.client.create_registered_model(name)
        except Exception as exc:
            if error_code(exc) != ALREADY_EXISTS:
                raise

    # ------------------------------------------------------------------ aliases
    def promote(self, name: str, version: int, alias: str, *,
                experiment: str | None = None, by: str = "user") -> str:
        """Move ``alias`` of ``name`` (in ``experiment``'s scope) to ``version``; the
        registry alias moved."""
        registry_alias = self.alias_for(alias, experiment)
        self._check_version(name, version)
        self.client.set_registered_model_alias(name, registry_alias, str(version))
        history = self.history(name, registry_alias)
        if not history or history[-1]["version"] != int(version):
            history.append({"version": int(version), "at": int(time.time() * 1000),
                            "by": by, "how": "promote"})
        self._save_history(name, registry_alias, history)
        return registry_alias

    def rollback(self, name: str, alias: str, *, to: int | None = None,
                 experiment: str | None = None, by: str = "user") -> tuple[str, int, int | None]:
        """Move ``alias`` back to its previous holder (or to version ``to``):
        ``(registry alias, version now, version before)``."""
        registry_alias = self.alias_for(alias, experiment)
        current = self.alias_version(name, registry_alias)
        history = self.history(name, registry_alias)
        if to is None:
            while history and (history[-1]["version"] == current
                               or not self._version_exists(name, history[-1]["version"])):
                history.pop()
            if not history:
                raise NotFoundError(f"model {name!r} alias {registry_alias!r}: no earlier "
                                    "holder to roll back to (name one with --to VERSION)")
            target = int(history[-1]["version"])
        else:
            target = int(to)
            self._check_version(name, target)
            history.append({"version": target, "at": int(time.time() * 1000), "by": by,
                            "how": "rollback"})
        self.client.set_registered_model_alias(name, registry_alias, str(target))
        self._save_history(name, registry_alias, history)
        return registry_alias, target, current

    def alias_version(self, name: str, registry_alias: str) -> int | None:
        try:
            return int(self.client.get_model_version_by_alias(name, registry_alias).version)
        except Exception as exc:
            if error_code(exc) in (DOES_NOT_EXIST, "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def history(self, name: str, registry_alias: str) -> list[dict[str, Any]]:
        """The holders of a registry alias, oldest first, as ultron moved it."""
        model = self._registered(name)
        raw = dict(model.tags or {}).get(HISTORY_TAG + registry_alias)
        try:
            entries = json.loads(raw) if raw else []
        except ValueError:
            entries = []
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("version"), int)]

    def _save_history(self, name: str, registry_alias: str,
                      history: list[dict[str, Any]]) -> None:
        self.client.set_registered_model_tag(name, HISTORY_TAG + registry_alias,
                                             json.dumps(history[-HISTORY_KEEP:]))

    # ------------------------------------------------------------------ reading
    def _registered(self, name: str) -> Any:
        try:
            return self.client.get_registered_model(check_name(name))
        except Exception as exc:
            if error_code(exc) == DOES_NOT_EXIST:
                raise NotFoundError(f"no registered model {name!r} in "
                                    f"{self.store.safe_uri}") from None
            raise

    def _version_exists(self, name: str, version: int) -> bool:
        from ultron_nb.engines.mlflow.registry import get_version

        return get_version(self.client, name, int(version)) is not None

    def _check_version(self, name: str, version: int) -> None:
        self._registered(name)
        if not self._version_exists(name, version):
            raise NotFoundError(f"model {name!r} has no version {version}")

    def resolve(self, name: str, alias: str = "champion", *,
                experiment: str | None = None) -> tuple[int, str]:
        """``(version, registry alias)`` that ``alias`` means for ``experiment`` (default:
        this center's): its own scoped alias, else its parent's, ..., else the plain one."""
        experiment = experiment if experiment is not None else self.experiment
        chain = self.chain(experiment)
        for scope in alias_scopes(chain) if chain else [None]:
            registry_alias = scoped_alias(_check_alias(alias), scope)
            version = self.alias_version(name, registry_alias)
            if version is not None:
                return version, registry_alias
        raise NotFoundError(f"model {name!r} has no alias {alias!r}"
                            + (f" for experiment {experiment!r}" if experiment else ""))

    def download(self, name: str, version: int) -> str:
        """A local directory (or path) holding version ``version`` of ``name``."""
        from urllib.parse import urlsplit

        uri = self.client.get_model_version_download_uri(name, str(version))
        parts = urlsplit(uri)
        if parts.scheme in ("", "file"):
            return parts.path if parts.scheme else uri
        from mlflow.artifacts import download_artifacts

        return str(download_artifacts(artifact_uri=uri, tracking_uri=self.store.uri))

    def load(self, name: str, alias: str | None = "champion", *, version: int | None = None,
             experiment: str | None = None, native: bool = False) -> Any:
        """Load a version (by number, or the one ``alias`` resolves to for the experiment):
        a pyfunc model, or with ``native`` the object that was logged."""
        from ultron_nb.engines.mlflow import flavors

        if version is None:
            version, _ = self.resolve(name, alias or "champion", experiment=experiment)
        path = self.download(name, int(version))
        return flavors.load_native(path) if native else flavors.load_pyfunc(path)

    def lineage(self, name: str, version: int) -> dict[str, Any]:
        """Where version ``version`` of ``name`` comes from: its ``ultron.*`` tags decoded,
        with its run, source and metrics."""
        from ultron_nb.engines.mlflow.registry import get_version, run_metrics

        info = get_version(self.client, name, int(version))
        if info is None:
            raise NotFoundError(f"model {name!r} has no version {version}")
        out: dict[str, Any] = {"model": name, "version": info.version, "status": info.status,
                               "run_id": info.run_id, "source": info.source}
        for key, value in sorted(info.tags.items()):
            if key.startswith(TAG):
                short = key[len(TAG):]
                out[short] = json.loads(value) if short in ("params", "inputs", "rows") \
                    else value
        out["metrics"] = run_metrics(self.client, info.run_id)
        return out

    def models(self, name: str | None = None) -> list[Any]:
        """The registered models (or only ``name``), by name; [] without a store (none is
        created by asking)."""
        if not self.store.exists():
            return []
        if name:
            try:
                return [self._registered(name)]
            except NotFoundError:
                return []
        found: list[Any] = []
        token = None
        while True:
            page = self.client.search_registered_models(max_results=1000, page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                break
        return sorted(found, key=lambda m: str(m.name))

    def newest_versions(self, name: str, limit: int) -> list[Any]:
        """The ``limit`` newest versions of model ``name``, newest first."""
        return list(self.client.search_model_versions(
            f"name = '{_escape(check_name(name))}'", max_results=limit,
            order_by=["version_number DESC"]))

    def versions(self, name: str | None = None, *, experiment: str | None = None,
                 limit: int = 100) -> list[Any]:
        """Versions of ``name`` (default: every model), or of ``experiment``'s lineage,
        newest first."""
        clauses = []
        if name:
            clauses.append(f"name = '{_escape(check_name(name))}'")
        if experiment:
            clauses.append(f"tags.`{TAG}experiment` = '{_escape(experiment)}'")
        if not self.store.exists():
            return []
        found = []
        token = None
        while True:
            page = self.client.search_model_versions(" AND ".join(clauses) or None,
                                                     max_results=1000, page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                break
        found.sort(key=lambda v: (v.name, -int(v.version)))
        return found[:limit] if limit else found


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _check_alias(alias: str) -> str:
    import re

    if not alias or not re.fullmatch(r"[\w\-]+", alias) or alias.lower() == "latest" \
            or re.fullmatch(r"[vV]\d+", alias):
        raise ConfigError(f"alias {alias!r}: letters, digits, _ and - only (not 'latest' "
                          "or v<number>)")
    return alias


# ----------------------------------------------------------------------------- from nodes
def lineage_of(ctx: Any, *, rows: int | Mapping[str, int] | None = None,
               window: tuple[int, int] | None = None) -> Lineage:
    """The lineage of a model trained by the node run ``ctx`` (a ``NodeContext``)."""
    label = ""
    if ctx.db_url:
        with open_database(ctx.db_url).read() as conn:
            try:
                label = repo.get_experiment(conn, ctx.experiment).label
            except NotFoundError:
                label = ""
    return Lineage(
        experiment=ctx.experiment, node=ctx.node, flow=getattr(ctx, "flow", ""),
        flow_version=int(getattr(ctx, "flow_version", 0) or 0), instance=ctx.instance_id,
        attempt=int(ctx.attempt), trigger=str(ctx.trigger.get("occurrence", "")), label=label,
        params=dict(ctx.params), inputs=dict(ctx.input_paths),
        window=window if window is not None else ctx.window, rows=rows, home=str(ctx.home))


def node_center(ctx: Any) -> ModelCenter:
    """The model center as node run ``ctx`` sees it (its experiment's alias scope)."""
    settings = load_settings(home=str(ctx.home), db_url=ctx.db_url or None)
    db = open_database(settings.database_url)
    return ModelCenter(settings, db, experiment=ctx.experiment)


def log_model(ctx: Any, model: Any = None, *, name: str,
              metrics: Mapping[str, float] | None = None,
              params: Mapping[str, Any] | None = None,
              rows: int | Mapping[str, int] | None = None,
              window: tuple[int, int] | None = None, alias: str | None = None,
              flavor: str = "auto", path: str | Path | None = None,
              tags: Mapping[str, str] | None = None) -> RegisteredVersion:
    """What ``ctx.log_model`` does: see :meth:`ModelCenter.register`."""
    return node_center(ctx).register(model, name=name,
                                     lineage=lineage_of(ctx, rows=rows, window=window),
                                     metrics=metrics, params=params, alias=alias,
                                     flavor=flavor, path=path, tags=tags)


__all__ = ["Lineage", "ModelCenter", "RegisteredVersion", "lineage_of", "log_model",
           "node_center"]
