"""Listening to notification events: a reader that follows event ids and misses nothing.

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

import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, case, func, literal, or_, select, text

from ultron_nb.events.send import (
    CHANNEL,
    COALESCE_S,
    DEFAULT_NAMESPACE,
    FALLBACK_POLL_S,
    GAP_WAIT_S,
    IDLE_SLOTS,
    OWNER_KEY,
    SAFETY_POLL_S,
    SIGNAL_KEY,
    Event,
    _event,
    _filter,
    last_event_id,
)
from ultron_nb.store.db import WRITE_LOCK_ID
from ultron_nb.store.schema import events

if TYPE_CHECKING:
    from ultron_nb.store import Database

log = logging.getLogger(__name__)

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
