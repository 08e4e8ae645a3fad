"""Registry events: every change of the MLflow registry becomes one notification event.

The scheduler daemon calls :meth:`RegistryWatcher.poll` every tick (it loads the watcher by
module path, :data:`ultron_nb.scheduler.loop.WATCHERS`). It watches versions
registered by *any* MLflow client and sends (keys in :mod:`ultron_nb.events.model_keys`):

- ``model/<name>/version`` once for each version when it is READY — never while it is
  PENDING_REGISTRATION, never for one that failed to register;
- ``model/<name>/alias/<alias>`` once for each alias set, move (a rollback too) or delete
  (deleting the model deletes its aliases).

Exactly once across restarts: what has been announced (per model: the highest version
looked at, versions still pending, the aliases) is the *cursor*, kept in the metadata
store (``scheduler_state`` row ``models:<registry>``) and committed in the same transaction
as the events it sends. A watcher that starts again diffs the registry against it, so
what changed while no daemon ran is announced then, and nothing twice. Moves of one alias
between two looks are one move (the registry keeps no alias history). The first time a
registry is watched, versions created before the store's oldest experiment (or before that
moment, when there is none) and the aliases on them are the starting point: history no
experiment waited for. Later ones are news, even if mlflow was still importing.

Cheap when idle: on SQLite the registry is read only when ``PRAGMA data_version`` changed;
elsewhere every ``interval`` seconds. ``mlflow`` is imported in a background thread the
first time there is a registry to read, so the daemon's loop never waits for it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ultron_nb.config import Settings
from ultron_nb.engines.mlflow.registry import (
    FAILED,
    PENDING,
    READY,
    ChangeProbe,
    ModelSummary,
    VersionInfo,
    get_version,
    run_metrics,
    versions_after,
)
from ultron_nb.engines.mlflow.store import MlflowStore
from ultron_nb.events import Event, append_event
from ultron_nb.events.keys import SENDER_MODELS
from ultron_nb.events.model_keys import alias_key, version_key
from ultron_nb.store import experiments as repo
from ultron_nb.store import triggers

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ultron_nb.store import Database

log = logging.getLogger(__name__)

SENDER = SENDER_MODELS
LINEAGE_EXPERIMENT = "ultron.experiment"


def state_name(store: MlflowStore) -> str:
    """The ``scheduler_state`` row of the cursor of ``store``'s registry."""
    return "models:" + hashlib.sha1(store.uri.encode()).hexdigest()[:16]


@dataclass
class _Planned:
    key: str
    value: dict[str, Any]


@dataclass
class Cursor:
    """What has been announced: per model ``hi`` (highest version looked at), ``waiting``
    (versions at or below ``hi`` still pending) and ``aliases`` (alias → version)."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: bool = False  # the registry has been read once (the starting point is taken)
    since_ms: int = 0  # when watching began: versions created before are the starting point

    @classmethod
    def from_json(cls, value: Any) -> Cursor:
        value = value if isinstance(value, dict) else {}
        return cls({str(k): {"hi": int(v.get("hi", 0)),
                             "waiting": [int(w) for w in v.get("waiting", [])],
                             "aliases": {str(a): int(n) for a, n in v.get("aliases", {}).items()}}
                    for k, v in dict(value.get("models", {})).items()},
                   bool(value.get("started", False)), int(value.get("since_ms", 0)))

    def to_json(self, store: MlflowStore) -> dict[str, Any]:
        return {"registry": store.safe_uri, "started": self.started, "since_ms": self.since_ms,
                "models": self.models}


def version_value(info: VersionInfo, metrics: dict[str, float]) -> dict[str, Any]:
    """The value of a ``model/<name>/version`` event."""
    return {"version": info.version, "run_id": info.run_id, "source": info.source,
            "status": info.status, "metrics": metrics, "tags": info.tags,
            "experiment": info.tags.get(LINEAGE_EXPERIMENT), "created_ms": info.created_ms}


def diff(cursor: Cursor, models: dict[str, ModelSummary], client: MlflowClient
         ) -> tuple[list[_Planned], Cursor]:
    """The events that bring ``cursor`` up to the registry's ``models``, and the new cursor.
    Per model: new READY versions (oldest first), then alias changes."""
    planned: list[_Planned] = []
    out = Cursor({}, True, cursor.since_ms)
    for name in sorted(models):
        summary = models[name]
        old = cursor.models.get(name, {"hi": 0, "waiting": [], "aliases": {}})
        hi, waiting = int(old["hi"]), list(old["waiting"])
        still: list[int] = []
        for number in waiting:  # announced when READY, forgotten when gone or failed
            info = get_version(client, name, number)
            if info is None or info.status == FAILED:
                continue
            if info.status == READY:
                planned.append(_Planned(version_key(name),
                                        version_value(info, run_metrics(client, info.run_id))))
            else:
                still.append(number)
        if summary.top > hi:
            for info in versions_after(client, name, hi):
                hi = max(hi, info.version)
                if info.status == READY:
                    planned.append(_Planned(version_key(name), version_value(
                        info, run_metrics(client, info.run_id))))
                elif info.status == PENDING:
                    still.append(info.version)
        _alias_changes(name, dict(old["aliases"]), summary.aliases, planned)
        out.models[name] = {"hi": hi, "waiting": sorted(set(still)),
                            "aliases": dict(summary.aliases)}
    for name in sorted(set(cursor.models) - set(models)):  # the model was deleted
        _alias_changes(name, dict(cursor.models[name]["aliases"]), {}, planned)
    return planned, out


def _alias_changes(name: str, old: dict[str, int], new: dict[str, int],
                   planned: list[_Planned]) -> None:
    for alias in sorted(set(old) | set(new)):
        before, now = old.get(alias), new.get(alias)
        if before == now:
            continue
        change = "set" if before is None else "delete" if now is None else "move"
        planned.append(_Planned(alias_key(name, alias),
                                {"version": now, "previous": before, "change": change}))


def baseline(models: dict[str, ModelSummary], client: MlflowClient, since_ms: int) -> Cursor:
    """The starting point on a registry read for the first time: its versions created before
    ``since_ms`` and the aliases on them (pending ones still to be announced when READY)."""
    out = Cursor({}, True, since_ms)
    for name, summary in models.items():
        old = [v for v in versions_after(client, name, 0) if v.created_ms < since_ms]
        hi = max((v.version for v in old), default=0)
        out.models[name] = {
            "hi": hi, "waiting": [v.version for v in old if v.status == PENDING],
            "aliases": {a: n for a, n in summary.aliases.items() if n <= hi}}
    return out


class RegistryWatcher:
    """Turns registry changes into events; :meth:`poll` each tick of the daemon's loop."""

    def __init__(self, db: Database, settings: Settings, *, interval: float = 2.0):
        self.db = db
        self.store = MlflowStore.of(settings)
        self.name = state_name(self.store)
        self.probe = ChangeProbe(self.store, interval=interval)
        self._cursor: Cursor | None = None
        self._client: MlflowClient | None = None
        self._importer: threading.Thread | None = None
        self._retry_at = 0.0
        self._exists = False
        self._failures = 0  # consecutive failed reads: the next one waits 2^n s (at most 30)
        self.polls = 0  # registry reads (for tests and benchmarks)

    # ------------------------------------------------------------------ the cursor
    def _load(self) -> Cursor:
        with self.db.read() as conn:
            row = triggers.load_state(conn, self.name)
        return Cursor.from_json(row) if row else Cursor()

    def _commit(self, planned: list[_Planned], cursor: Cursor) -> list[Event]:
        sent = []
        with self.db.write() as conn:
            for p in planned:
                sent.append(append_event(conn, p.key, p.value, sender=SENDER))
            triggers.save_state(conn, self.name, cursor.to_json(self.store))
        return sent

    def _since_ms(self) -> int:
        with self.db.read() as conn:
            oldest = repo.oldest_experiment_time(conn)
        now = time.time()
        return int(min(now, float(oldest) if oldest is not None else now) * 1000)

    # ------------------------------------------------------------------ polling
    def _ready_client(self) -> MlflowClient | None:
        """The client, once ``mlflow`` is imported (in the background: it takes seconds)."""
        if self._client is not None:
            return self._client
        if self._importer is None:
            self._importer = threading.Thread(target=_import_mlflow, name="mlflow-import",
                                              daemon=True)
            self._importer.start()
        if self._importer.is_alive():
            return None
        self._client = self.store.client()
        return self._client

    def poll(self) -> list[Event]:
        """Announce what changed in the registry since the cursor; the events sent."""
        if time.monotonic() < self._retry_at:
            return []
        if self._cursor is None:
            self._cursor = self._load()
        if not self._cursor.since_ms:  # watching begins: see the module docstring
            self._cursor = Cursor({}, False, self._since_ms())
            self._commit([], self._cursor)
        if not self._exists:
            self._exists = self.store.exists()  # once it exists, it stays
            if not self._exists:
                return []
        client = self._ready_client()
        if client is None or not self.probe.changed():
            return []
        try:
            models = self.probe.models(client)
            start = self._cursor
            if not start.started:
                start = baseline(models, client, start.since_ms)
                log.info("registry %s: watching from %d models", self.store.safe_uri,
                         len(models))
            planned, cursor = diff(start, models, client)
            self.polls += 1
            sent = self._commit(planned, cursor) if (planned or cursor != self._cursor) \
                else []
        except Exception:
            self.probe.close()  # look again next time, whatever data_version says
            self._cursor = None  # reload what is committed
            self._failures += 1
            self._retry_at = time.monotonic() + min(30.0, 2.0 ** self._failures)
            raise
        self._failures = 0
        self._cursor = cursor
        for event in sent:
            log.info("registry event %s v%d: %s", event.key, event.version, _brief(event.value))
        return sent

    def close(self) -> None:
        self.probe.close()


def _import_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except Exception:  # reported when the client is built
        log.exception("cannot import mlflow")


def _brief(value: dict[str, Any]) -> str:
    keys = ("version", "previous", "change", "experiment")
    return ", ".join(f"{k}={value[k]}" for k in keys if k in value)


__all__ = ["SENDER", "Cursor", "RegistryWatcher", "baseline", "diff", "state_name",
           "version_value"]
