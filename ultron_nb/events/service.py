"""The notification service: versioned events in the metadata store, and listeners on them.

An event is ``(namespace, key, value, version, sender, time)``. Every key has its own gapless
version counter (1, 2, 3, ...) and every event a global, growing ``id``: a reader that
remembers the last id it has seen misses nothing (see below why). Any process may send: a
Python node, the Flink status poller, a user's cell, the scheduler.

Values are JSON: a string, a number, a list or an object. They are stored as JSON text and
decoded on read; text that is not JSON (written by some other tool) is returned as it is.

Listening: the ``events`` table is the source of truth on both backends. On SQLite a
listener polls the table by id (a cheap primary-key read every ``poll`` seconds). On
PostgreSQL a listener ``LISTEN``\\ s on ``ultron_events`` and a sender ``NOTIFY``\\ s it when
a listener waits; the woken listener reads the table by id as on SQLite. A notification only
wakes a listener, so a missed one loses nothing: a waiting listener still re-reads the table
at least every second.

Why senders notify only when a listener waits: PostgreSQL serialises the commits of
notifying transactions (a lock held until after the WAL flush), which under load cut
throughput several fold. A listener about to wait takes one of :data:`IDLE_SLOTS` *signal*
advisory locks exclusively (waiting for senders that hold it), looks at the table once more,
then waits. A sender tries to take every signal lock in shared mode for the rest of its
transaction: if one is held exclusively, a listener waits, and it notifies. A sender that got
them all notifies nobody, but a listener going idle cannot get its lock before that sender
commits, so its last look sees the event. A listener reading (a burst) holds no signal lock,
and senders do not notify at all. A listener finding no free slot polls every
:data:`FALLBACK_POLL_S`.

Why a reader that follows ids misses nothing:

- SQLite: writers are serialised (``BEGIN IMMEDIATE``, as :meth:`Database.write` does), so ids
  commit in order: once id ``n`` is visible, every smaller id is committed or never will be.
- PostgreSQL: serialising senders would hold a lock across each commit's WAL flush and forbid
  group commit, which caps throughput at one fsync per event. So a sender holds the store's
  write lock (the advisory lock :meth:`Database.write` takes exclusively) in *shared* mode, from
  before it draws its id until it commits, and ids may commit out of order. A reader only
  moves past a run of consecutive visible ids; a missing id is a send still in flight (its
  commit will come and notify) or one that never will be (a failed send). When a gap
  lasts, the reader settles it with a barrier: having seen ids up to ``high``, it takes and
  releases the write lock exclusively, which waits for every sender still in flight. Ids
  come from a sequence in increasing order, so whoever drew an id below ``high`` did so
  before ``high`` was committed, hence held the shared lock when the barrier began: after
  the barrier every id up to ``high`` is committed or never will be. :func:`events_after`
  and :class:`Listener` do this; read the table another way and you may skip a late
  commit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, case, func, literal, or_, select, text
from sqlalchemy.exc import SQLAlchemyError

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
        try:
            self.raw.invalidate()
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
            raise StoreError(f"cannot send event {key!r} to {db.safe_url}: {exc}") from exc
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


_PG_LOCK = text(f"SELECT pg_advisory_lock({WRITE_LOCK_ID})")
_PG_UNLOCK = text(f"SELECT pg_advisory_unlock({WRITE_LOCK_ID})")
_PG_XACT_LOCK = text(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_ID})")
_HIGH = select(func.coalesce(func.max(events.c.id), 0))


def _pg_barrier(conn: Connection) -> None:
    """Wait until no sender that drew an id before now is still in flight."""
    if getattr(conn.connection.driver_connection, "autocommit", False):
        conn.execute(_PG_XACT_LOCK)  # its own implicit transaction: released at once
    else:
        conn.execute(_PG_LOCK)
        conn.execute(_PG_UNLOCK)


@dataclass(frozen=True)
class _Queries:
    """The statements of a reader with one filter (built once: SQLAlchemy caches them)."""

    matching: Any  # SQLite: matching events with :after < id <= :high
    everything: Any  # PostgreSQL: every event after :after, flagged ``m`` when matching
    bounded: Any  # PostgreSQL: the same, up to :high


def _queries(keys: Iterable[str] | None, namespace: str | None) -> _Queries:
    where = _filter(keys, namespace)
    window = [events.c.id > bindparam("after"), events.c.id <= bindparam("high")]
    matching = select(events).where(*window).order_by(events.c.id).limit(bindparam("limit"))
    if where is not None:
        matching = matching.where(where)
    flag = (case((where, True), else_=False) if where is not None else literal(True)).label("m")
    everything = (select(events, flag).where(events.c.id > bindparam("after"))
                  .order_by(events.c.id).limit(bindparam("limit")))
    bounded = everything.where(events.c.id <= bindparam("high"))
    return _Queries(matching, everything, bounded)


def _read_after(conn: Connection, queries: _Queries, after_id: int, limit: int, *,
                resolve: bool = True) -> tuple[list[Event], int, int | None]:
    """Read one batch after ``after_id``: (events, new cursor, first missing id or None).

    SQLite: writers are serialised, so ids become visible in order: read up to the newest.
    PostgreSQL: ids may commit out of order (see the module docstring). Only a run of
    consecutive visible ids is complete; a missing id is a send still in flight (its commit
    will come, and notify) or one that never will be (a failed send). ``resolve`` settles
    a gap with the barrier: after it, whatever is still missing up to the highest id seen
    never will be there."""
    if conn.dialect.name != "postgresql":
        high = int(conn.execute(_HIGH).scalar_one())
        if high <= after_id:
            return [], after_id, None
        found = [_event(r) for r in conn.execute(
            queries.matching, {"after": after_id, "high": high, "limit": limit})]
        return found, (found[-1].id if len(found) >= limit else high), None
    rows = conn.execute(queries.everything, {"after": after_id, "limit": limit}).all()
    settled = after_id
    for row in rows:
        if row.id != settled + 1:
            break
        settled = row.id
    gap = None
    if rows and settled != rows[-1].id:
        if resolve:
            high = rows[-1].id
            _pg_barrier(conn)  # every id <= high is now committed or never will be
            rows = conn.execute(queries.bounded,
                                {"after": after_id, "high": high, "limit": limit}).all()
            settled = rows[-1].id if len(rows) >= limit else high
        else:
            gap = settled + 1
    found = [_event(r) for r in rows if r.m and r.id <= settled]
    return found, settled, gap


def events_after(
    conn: Connection,
    after_id: int,
    *,
    keys: Iterable[str] | None = None,
    namespace: str | None = DEFAULT_NAMESPACE,
    limit: int = 1000,
) -> tuple[list[Event], int]:
    """Events with id > ``after_id`` matching the filter, oldest first, and the new cursor.

    The cursor passes events that do not match, so a filtered reader never re-scans them.
    On PostgreSQL ``conn`` must not hold the store's write lock (not a ``db.write()``
    transaction) and must be READ COMMITTED (the default) or autocommit.
    """
    found, cursor, _gap = _read_after(conn, _queries(keys, namespace), after_id, limit)
    return found, cursor


# ----------------------------------------------------------------------------- waiting
class _PgWaker:
    """A dedicated psycopg connection that LISTENs on :data:`CHANNEL`, and holds the
    listener's signal lock while it waits (see the module docstring)."""

    def __init__(self, db: Database):
        self._db = db
        self._conn: Any = None
        self.slot: int | None = None  # the signal slot held while idle
        self._connect()

    def _connect(self) -> None:
        import psycopg  # lazy: only PostgreSQL stores need it

        url = self._db.engine.url
        _args, params = self._db.engine.dialect.create_connect_args(url)
        self._conn = psycopg.connect(**params, autocommit=True)
        self._conn.execute(f"LISTEN {CHANNEL}")
        self.slot = None

    def enter_idle(self) -> bool:
        """Announce that this listener is about to wait: from now on every sender notifies.
        Returns when senders that committed without notifying are done; False when no slot
        was free (then poll)."""
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._connect()
            if self.slot is None:
                row = self._conn.execute(
                    f"SELECT slot FROM generate_series(0, {IDLE_SLOTS - 1}) AS slot "
                    f"WHERE pg_try_advisory_lock({OWNER_KEY} + slot) LIMIT 1").fetchone()
                if row is None:
                    return False
                self.slot = int(row[0])
                # Waits for the senders that tried the slot and will not notify.
                self._conn.execute(f"SELECT pg_advisory_lock({SIGNAL_KEY} + {self.slot})")
            for _ in self._conn.notifies(timeout=0.0):  # older news: the caller reads next
                pass
            return True
        except psycopg.Error as exc:
            log.warning("event listener lost its PostgreSQL connection (%s); reconnecting", exc)
            self.close()
            return False

    def leave_idle(self) -> None:
        """This listener reads again: senders may stop notifying for it."""
        if self.slot is None or self._conn is None:
            return
        import psycopg

        try:
            self._conn.execute(f"SELECT pg_advisory_unlock({SIGNAL_KEY} + {self.slot}), "
                               f"pg_advisory_unlock({OWNER_KEY} + {self.slot})")
        except psycopg.Error as exc:
            log.warning("event listener lost its PostgreSQL connection (%s)", exc)
            self.close()
        self.slot = None

    def wait(self, timeout: float) -> None:
        """Return when a notification arrives or ``timeout`` seconds pass."""
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._connect()
            woken = False
            for _ in self._conn.notifies(timeout=max(0.0, timeout), stop_after=1):
                woken = True
            if woken:
                # Let a few more commits land so one read serves them all.
                time.sleep(COALESCE_S)
        except psycopg.Error as exc:
            log.warning("event listener lost its PostgreSQL connection (%s); reconnecting", exc)
            self.close()
            time.sleep(min(timeout, 0.5))

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # the server releases the session's locks
            except Exception:
                log.debug("closing the LISTEN connection failed", exc_info=True)
            self._conn = None
        self.slot = None


class Listener(Iterator[Event]):
    """An iterator over new events of some keys; it blocks up to ``timeout`` for each.

    Iteration ends (and the listener closes) when no matching event arrived for ``timeout``
    seconds (``None``: wait forever). :attr:`last_id` is the cursor: the id of the last event
    handed out (or passed over); give it as ``since_id`` to resume later. :meth:`poll` hands
    out batches instead. Close it (or use it as a context manager) to free its connections.
    Not thread-safe: one listener per thread.
    """

    def __init__(
        self,
        db: Database,
        keys: str | Iterable[str] | None = None,
        *,
        namespace: str | None = DEFAULT_NAMESPACE,
        since_version: int | Mapping[str, int] | None = None,
        since_id: int | None = None,
        timeout: float | None = None,
        poll: float = 0.02,
        batch: int = 1000,
    ):
        if since_version is not None and since_id is not None:
            raise ValueError("give since_version or since_id, not both")
        self._db = db
        self.keys: list[str] | None = [keys] if isinstance(keys, str) else (
            None if keys is None else list(keys))
        self.namespace = namespace
        self.timeout = timeout
        self.poll_interval = max(0.001, poll)
        self._batch = batch
        self._waker: _PgWaker | None = None
        if not db.is_sqlite:
            self._waker = _PgWaker(db)  # LISTEN before the first read: nothing slips between
        self._conn: Connection | None = db.engine.connect()
        if not db.is_sqlite:  # single-statement reads need no transaction round trips
            self._conn = self._conn.execution_options(isolation_level="AUTOCOMMIT")
        self._queries = _queries(self.keys, namespace)
        self._last_burst = 0.0  # PostgreSQL: when the last read found events
        self._buffer: deque[Event] = deque()
        self._cursor = 0  # read position in the table
        self._notified = False  # PostgreSQL: senders notify us while we wait
        self._gap: int | None = None  # PostgreSQL: first id not visible yet, since when
        self._gap_at = 0.0
        self._handed = 0  # id of the last event handed out
        with self._conn.begin():
            if since_id is not None:
                self._cursor = int(since_id)
            else:
                self._cursor = last_event_id(self._conn)
                if since_version is not None:
                    self._buffer.extend(self._versions_after(since_version, self._cursor))
        self._handed = self._cursor if not self._buffer else self._buffer[0].id - 1

    @property
    def last_id(self) -> int:
        """Resume point: every event up to this id was handed out or did not match."""
        return self._handed if self._buffer else max(self._handed, self._cursor)

    def _versions_after(self, since: int | Mapping[str, int], high: int) -> list[Event]:
        assert self._conn is not None
        where = [events.c.id <= high]
        flt = _filter(self.keys, self.namespace)
        if flt is not None:
            where.append(flt)
        if isinstance(since, Mapping):
            where.append(or_(*(
                and_(events.c.key == k, events.c.version > int(v)) for k, v in since.items()
            )) if since else events.c.id < 0)
        else:
            where.append(events.c.version > int(since))
        rows = self._conn.execute(select(events).where(*where).order_by(events.c.id))
        return [_event(r) for r in rows]

    # ------------------------------------------------------------------ reading
    def _read(self) -> list[Event]:
        assert self._conn is not None
        if self._waker is not None:
            # In a burst, one read every COALESCE_S serves many events; reading after each
            # would cost the senders the CPU they need.
            delay = self._last_burst + COALESCE_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        now = time.monotonic()
        resolve = self._gap is not None and now - self._gap_at >= GAP_WAIT_S
        with self._conn.begin():
            found, self._cursor, gap = _read_after(self._conn, self._queries, self._cursor,
                                                   self._batch, resolve=resolve)
        if gap != self._gap:
            self._gap, self._gap_at = gap, now
        self._last_burst = now if found else 0.0
        return found

    def poll(self, timeout: float | None = None) -> list[Event]:
        """The next batch of matching events, waiting up to ``timeout`` seconds for one
        (``None``: the listener's own timeout). An empty list means the time ran out."""
        if self._conn is None:
            raise ValueError("the listener is closed")
        if self._buffer:
            found = list(self._buffer)
            self._buffer.clear()
            self._handed = found[-1].id
            return found
        wait = self.timeout if timeout is None else timeout
        deadline = math.inf if wait is None else time.monotonic() + wait
        waker = self._waker
        while True:
            found = self._read()
            if not found and waker is not None and waker.slot is None:
                # About to wait: announce it, then look once more (a sender that committed
                # without notifying is visible now).
                self._notified = waker.enter_idle()
                found = self._read()
            if found:
                if waker is not None:
                    waker.leave_idle()
                self._handed = found[-1].id
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if waker is not None:
                nap = min(remaining, SAFETY_POLL_S if self._notified else FALLBACK_POLL_S)
                if self._gap is not None:  # settle it when its time is up, notified or not
                    nap = min(nap, max(0.0, self._gap_at + GAP_WAIT_S - time.monotonic()))
                waker.wait(nap)
            else:
                time.sleep(min(remaining, self.poll_interval))

    def seek(self, last_id: int) -> None:
        """Continue after event id ``last_id`` (drops anything read but not handed out)."""
        self._buffer.clear()
        self._cursor = self._handed = int(last_id)

    def __next__(self) -> Event:
        if not self._buffer:
            if self._conn is None:
                raise StopIteration
            batch = self.poll()
            if not batch:
                self.close()
                raise StopIteration
            self._buffer.extend(batch)
        event = self._buffer.popleft()
        self._handed = event.id
        return event

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free the listener's connections."""
        if self._waker is not None:
            self._waker.close()
            self._waker = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def listen(
    db: Database,
    keys: str | Iterable[str] | None = None,
    *,
    namespace: str | None = DEFAULT_NAMESPACE,
    since_version: int | Mapping[str, int] | None = None,
    since_id: int | None = None,
    timeout: float | None = 30.0,
    poll: float = 0.02,
) -> Listener:
    """Yield new events of ``keys`` as they arrive, blocking up to ``timeout`` seconds for
    each; the iteration ends when none arrived in time.

    ``keys``: one key, several, or None for every key; a key ending in ``*`` is a prefix
    (``"status/exp1/*"``). ``namespace=None`` listens to every namespace.
    Where to start: ``since_version`` (an int for every key, or ``{key: version}``) first
    replays the stored versions above it; ``since_id`` continues after that event id;
    neither means only events sent from now on. ``poll`` is the SQLite polling interval.
    The result is a :class:`Listener`: ``last_id`` is its cursor; it closes itself when
    exhausted, or use it as a context manager.
    """
    return Listener(db, keys, namespace=namespace, since_version=since_version,
                    since_id=since_id, timeout=timeout, poll=poll)
