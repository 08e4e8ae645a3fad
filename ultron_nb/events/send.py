"""Sending and reading notification events: versioned values per key, in the metadata store.

An event is ``(namespace, key, value, version, sender, time)``. Every key has its own gapless
version counter (1, 2, 3, ...) and every event a global, growing ``id``. Any process may send:
a Python node, the Flink status poller, a user's cell, the scheduler. Values are JSON (stored as
JSON text, decoded on read; text that is not JSON is returned as it is). Listening, and why a
reader that follows ids misses nothing, is :mod:`ultron_nb.events.listen`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, func, or_, select, text
from sqlalchemy.exc import SAWarning, SQLAlchemyError

from ultron_nb.errors import DataError, StoreError
from ultron_nb.store.db import WRITE_LOCK_ID
from ultron_nb.store.schema import events

if TYPE_CHECKING:
    from ultron_nb.store import Database

log = logging.getLogger(__name__)

CHANNEL = "ultron_events"  # the PostgreSQL NOTIFY channel
DEFAULT_NAMESPACE = "default"
SAFETY_POLL_S = 1.0  # PostgreSQL: re-read the table at least this often, notified or not
IDLE_CHECK_S = 30.0  # PostgreSQL: check an idle sender connection before using it again
COALESCE_S = 0.005  # PostgreSQL: after a wake-up, wait this long so one read serves a burst
GAP_WAIT_S = 0.05  # PostgreSQL: wait this long for a missing id before settling it by lock
IDLE_SLOTS = 8  # PostgreSQL: listeners that can wait for a notification at the same time
FALLBACK_POLL_S = 0.02  # PostgreSQL: how often a listener without a free slot polls
SIGNAL_KEY = 0x756C7500  # advisory locks SIGNAL_KEY + i: "a listener waits" (slot i)
OWNER_KEY = 0x756C7520  # advisory locks OWNER_KEY + i: which listener has slot i
_MAX_KEY = 255
_MAX_NAME = 128


@dataclass(frozen=True)
class Event:
    """One event. ``value`` is decoded JSON (or the raw text when it is not JSON)."""

    id: int
    key: str
    value: Any
    version: int
    namespace: str = DEFAULT_NAMESPACE
    sender: str = "user"
    created_at: float = 0.0
    raw: str = field(default="", repr=False, compare=False)


# ----------------------------------------------------------------------------- encoding
def encode_value(value: Any, *, key: str = "") -> str:
    """JSON text of ``value``; a :class:`DataError` names the key when it is not JSON-able."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DataError(f"event {key!r}: the value is not JSON-serialisable: {exc}") from None


def decode_value(raw: str) -> Any:
    """The value stored as ``raw``: decoded JSON, or the text itself if it is not JSON."""
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


def _event(row: Any) -> Event:
    return Event(
        id=int(row.id),
        key=row.key,
        value=decode_value(row.value),
        version=int(row.version),
        namespace=row.namespace,
        sender=row.sender,
        created_at=float(row.created_at),
        raw=row.value,
    )


def _check_names(key: str, namespace: str, sender: str) -> None:
    if not key or len(key) > _MAX_KEY:
        raise DataError(f"event key {key!r}: must be 1 to {_MAX_KEY} characters")
    if not namespace or len(namespace) > _MAX_NAME:
        raise DataError(f"event namespace {namespace!r}: must be 1 to {_MAX_NAME} characters")
    if len(sender) > _MAX_NAME:
        raise DataError(f"event sender {sender[:40]!r}...: at most {_MAX_NAME} characters")


# ----------------------------------------------------------------------------- sending
# Hand-written SQL: sending is the hot path, and a prepared text statement costs a third of
# the equivalent Core construct. Both backends support INSERT .. ON CONFLICT .. RETURNING.
_BUMP_VERSION = text(
    "INSERT INTO event_versions (namespace, key, version) VALUES (:ns, :key, 1) "
    "ON CONFLICT (namespace, key) DO UPDATE SET version = event_versions.version + 1 "
    "RETURNING version"
)
_INSERT_EVENT = text(
    "INSERT INTO events (namespace, key, value, version, sender, created_at) "
    "VALUES (:ns, :key, :value, :version, :sender, :at) RETURNING id"
)
# PostgreSQL in one round trip, in its own implicit transaction: hold the store's write lock
# in shared mode, bump the key's version (the row lock keeps versions gapless), insert the
# event (lock, bump, ins run in this order: each reads the previous one; the id is drawn in
# the last), and notify if a listener waits (see the module docstring).
_PG_SEND = text(
    f"WITH lock AS (SELECT pg_advisory_xact_lock_shared({WRITE_LOCK_ID}) AS locked), "
    "bump AS (INSERT INTO event_versions (namespace, key, version) "
    "SELECT :ns, :key, 1 FROM lock "
    "ON CONFLICT (namespace, key) DO UPDATE SET version = event_versions.version + 1 "
    "RETURNING version), "
    "ins AS (INSERT INTO events (namespace, key, value, version, sender, created_at) "
    "SELECT :ns, :key, :value, bump.version, :sender, :at FROM bump RETURNING id, version), "
    # Does any listener wait? (It holds its signal lock exclusively; see the docstring.)
    "quiet AS (SELECT bool_and(pg_try_advisory_xact_lock_shared(slot)) AS q "
    f"FROM generate_series({SIGNAL_KEY}, {SIGNAL_KEY + IDLE_SLOTS - 1}) AS slot) "
    "SELECT ins.id, ins.version, "
    f"CASE WHEN quiet.q THEN NULL ELSE pg_notify('{CHANNEL}', '') END FROM ins, quiet"
)


def append_event(
    conn: Connection,
    key: str,
    value: Any,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    sender: str = "user",
) -> Event:
    """Append an event inside the caller's write transaction (``with db.write() as conn``).

    Use it when the event must commit together with other changes (a job's end state and
    its status event, say). The transaction must be a :meth:`Database.write` one, which holds
    the store's write lock: readers rely on it (see the module docstring).
    """
    _check_names(key, namespace, sender)
    raw = encode_value(value, key=key)
    now = time.time()
    version = int(conn.execute(_BUMP_VERSION, {"ns": namespace, "key": key}).scalar_one())
    new_id = conn.execute(_INSERT_EVENT, {
        "ns": namespace, "key": key, "value": raw, "version": version, "sender": sender,
        "at": now,
    }).scalar_one()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {CHANNEL}")  # delivered at commit; it only wakes
    return Event(int(new_id), key, decode_value(raw), version, namespace, sender, now, raw)


class _Stale(Exception):
    """The sender's connection died while idle; nothing was sent."""


class _Sender:
    """One open driver connection of a store, for one thread, with its statements ready.

    Sending is the hot path: opening a connection per event would cost more than the event
    (and on SQLite closing the last connection checkpoints the WAL), and SQLAlchemy's
    statement machinery triples the CPU time of a send. So a sender talks to the driver:
    on SQLite it opens the transaction with ``BEGIN IMMEDIATE`` exactly as
    :meth:`Database.write` does; on PostgreSQL one statement takes the store's write lock.
    """

    def __init__(self, db: Database):
        self.db = db
        self.pid = os.getpid()
        self.raw = db.engine.raw_connection()  # the store's connect-time setup applied
        self.driver: Any = self.raw.driver_connection
        # A thread that ends drops its senders: their connection is closed then, never
        # handed back to the pool (on PostgreSQL it is in autocommit mode, which would
        # break the next write transaction that got it), and never in a forked child.
        self._closer = weakref.finalize(self, _discard, self.raw, self.pid)  # runs once
        self.used = time.monotonic()
        if db.is_sqlite:
            self.bump = str(_BUMP_VERSION.compile(dialect=db.engine.dialect))
            self.insert = str(_INSERT_EVENT.compile(dialect=db.engine.dialect))
        else:
            self.driver.autocommit = True
            self.send_sql = str(_PG_SEND.compile(dialect=db.engine.dialect))
            self.cursor = self.driver.cursor()

    def send(self, namespace: str, key: str, raw: str, sender: str) -> tuple[int, int, float]:
        now = time.time()
        if self.db.is_sqlite:
            cur = self.driver.cursor()
            cur.execute("BEGIN IMMEDIATE")  # writers queue; ids follow commit order
            try:
                cur.execute(self.bump, (namespace, key))
                version = int(cur.fetchone()[0])
                cur.execute(self.insert, (namespace, key, raw, version, sender, now))
                new_id = int(cur.fetchone()[0])
                cur.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself on some errors (a full disk): a ROLLBACK then
                # fails and would hide the cause.
                if self.driver.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()
        else:
            if time.monotonic() - self.used > IDLE_CHECK_S:
                try:
                    self.driver.execute("SELECT 1")
                except Exception as exc:  # dead before anything was sent: reconnect
                    raise _Stale(str(exc)) from exc
            params = {"ns": namespace, "key": key, "value": raw, "sender": sender, "at": now}
            self.cursor.execute(self.send_sql, params, prepare=True)
            new_id, version, _ = self.cursor.fetchone()
        self.used = time.monotonic()
        return int(new_id), int(version), now

    def close(self) -> None:
        self._closer()  # the connection closed now, and not again when collected


def _discard(raw: Any, pid: int) -> None:
    """Close a dropped sender's connection (in the process that opened it only)."""
    if os.getpid() != pid:
        return
    try:
        with warnings.catch_warnings():  # closed already (a dead connection): nothing to say
            warnings.simplefilter("ignore", SAWarning)
            raw.invalidate()
    except Exception:
        log.debug("closing an event sender connection failed", exc_info=True)


class _Senders(threading.local):
    """This thread's :class:`_Sender` per store."""

    def __init__(self) -> None:
        self.senders: dict[int, _Sender] = {}

    def get(self, db: Database) -> _Sender:
        sender = self.senders.get(id(db))
        if sender is None or sender.db is not db or sender.pid != os.getpid():
            if sender is not None and sender.pid != os.getpid():
                # Inherited through fork: never close (that would close the parent's
                # session), never collect (its finaliser might): keep it.
                _FORK_ORPHANS.append(sender)
            sender = self.senders[id(db)] = _Sender(db)
        return sender

    def drop(self, db: Database) -> None:
        sender = self.senders.pop(id(db), None)
        if sender is not None and sender.pid == os.getpid():
            sender.close()


_SENDERS = _Senders()
_FORK_ORPHANS: list[_Sender] = []


def send_event(
    db: Database,
    key: str,
    value: Any,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    sender: str = "user",
) -> Event:
    """Persist a new version of ``key`` with ``value`` and wake every listener.

    ``value`` is a string or anything JSON-serialisable. Safe from any number of threads and
    processes: no event is lost and each key's versions stay gapless. Each call is one
    transaction (one round trip on PostgreSQL). A failure raises :class:`StoreError`; the
    event was then not sent (or, if the connection broke during the commit, perhaps was:
    check with :func:`latest` before sending again if a duplicate matters).
    """
    _check_names(key, namespace, sender)
    raw = encode_value(value, key=key)
    if db.read_only:
        raise StoreError(f"cannot send event {key!r}: the metadata store {db.where} is "
                         f"read-only ({db.read_only})")
    try:
        try:
            new_id, version, now = _SENDERS.get(db).send(namespace, key, raw, sender)
        except _Stale:
            _SENDERS.drop(db)
            log.info("event sender reconnecting to %s", db.safe_url)
            new_id, version, now = _SENDERS.get(db).send(namespace, key, raw, sender)
    except Exception as exc:
        _SENDERS.drop(db)
        if isinstance(exc, SQLAlchemyError | _Stale) or type(exc).__module__.split(".")[0] in (
                "sqlite3", "psycopg"):
            raise StoreError(f"cannot send event {key!r}: {db.describe(exc)}") from exc
        raise
    return Event(new_id, key, decode_value(raw), version, namespace, sender, now, raw)


# ----------------------------------------------------------------------------- reading
def latest(db: Database, key: str, *, namespace: str = DEFAULT_NAMESPACE) -> Event | None:
    """The newest version of ``key``, or None if it was never sent."""
    with db.read() as conn:
        row = conn.execute(
            select(events)
            .where(events.c.namespace == namespace, events.c.key == key)
            .order_by(events.c.version.desc())
            .limit(1)
        ).first()
    return _event(row) if row else None


def get_event(
    db_or_conn: Database | Connection, key: str, version: int, *,
    namespace: str = DEFAULT_NAMESPACE,
) -> Event | None:
    """Version ``version`` of ``key``, or None."""
    query = select(events).where(
        events.c.namespace == namespace, events.c.key == key, events.c.version == version
    )
    if isinstance(db_or_conn, Connection):
        row = db_or_conn.execute(query).first()
    else:
        with db_or_conn.read() as conn:
            row = conn.execute(query).first()
    return _event(row) if row else None


def recent(
    db: Database, key: str | None = None, *, namespace: str | None = DEFAULT_NAMESPACE,
    limit: int = 20,
) -> list[Event]:
    """The ``limit`` newest events (of ``key``, or of keys starting with it when it ends in
    ``*``), oldest first."""
    where = _filter([key] if key else None, namespace)
    query = select(events).order_by(events.c.id.desc()).limit(limit)
    if where is not None:
        query = query.where(where)
    with db.read() as conn:
        rows = conn.execute(query).all()
    return [_event(r) for r in reversed(rows)]


def last_event_id(db_or_conn: Database | Connection) -> int:
    """The id of the newest event (0 when there is none)."""
    query = select(func.coalesce(func.max(events.c.id), 0))
    if isinstance(db_or_conn, Connection):
        return int(db_or_conn.execute(query).scalar_one())
    with db_or_conn.read() as conn:
        return int(conn.execute(query).scalar_one())


def _filter(keys: Iterable[str] | None, namespace: str | None) -> Any:
    """WHERE clause for ``keys`` (exact, or prefixes when ending in ``*``) and namespace."""
    parts = []
    if namespace is not None:
        parts.append(events.c.namespace == namespace)
    if keys is not None:
        exact = [k for k in keys if not k.endswith("*")]
        prefixes = [k[:-1] for k in keys if k.endswith("*")]
        alternatives = []
        if exact:
            alternatives.append(events.c.key.in_(exact))
        for prefix in prefixes:
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            alternatives.append(events.c.key.like(escaped + "%", escape="\\"))
        parts.append(or_(*alternatives) if alternatives else events.c.id < 0)
    return and_(*parts) if parts else None
