"""Opening the metadata store: engine, transactions, schema version and migrations.

SQLite (the default) runs in WAL mode with a busy timeout, and write transactions begin with
``BEGIN IMMEDIATE``, so concurrent processes queue instead of failing or losing writes.
PostgreSQL is used as it is, by URL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from ultron_nb.errors import SchemaVersionError, StoreError
from ultron_nb.store.schema import SCHEMA_VERSION, meta, metadata

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
WRITE_LOCK_ID = 0x756C7472  # "ultr": the advisory lock that serialises PostgreSQL writers

def _v1_to_v2(conn: Connection) -> None:
    """Reference counts by explicit holds; the trigger of a scheduler run."""
    conn.exec_driver_sql("ALTER TABLE experiment_nodes ADD COLUMN released_at FLOAT")
    conn.exec_driver_sql("ALTER TABLE jobs ADD COLUMN trigger_id INTEGER")
    # Experiments the user ended before v2 let go of their instances then.
    conn.exec_driver_sql(
        "UPDATE experiment_nodes SET released_at = (SELECT updated_at FROM experiments "
        "WHERE experiments.id = experiment_nodes.experiment_id) WHERE experiment_id IN "
        "(SELECT id FROM experiments WHERE state IN ('stopped', 'canceled', 'failed'))")


# Migrations from version N to N+1: MIGRATIONS[N](connection).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2}


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        if conn.get_execution_options().get("ultron_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    """A connection to the metadata store at ``url``."""

    def __init__(self, url: str):
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(
                self.url, poolclass=NullPool, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000}
            )
            _sqlite_setup(self.engine)
        else:
            try:
                self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=4)
            except (SQLAlchemyError, ImportError) as exc:
                raise StoreError(f"cannot use metadata store {self.safe_url}: {exc}") from None
        self._ready = False
        self._lock = threading.Lock()

    @property
    def safe_url(self) -> str:
        """The URL without its password (for messages)."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def ensure_schema(self) -> None:
        """Create the tables of a new store, migrate an older one, refuse a newer one."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            try:
                with self.write() as conn:
                    self._ensure(conn)
            except OperationalError as exc:
                raise StoreError(
                    f"cannot open metadata store {self.safe_url}: {exc.orig}"
                ) from None
            self._ready = True

    def _ensure(self, conn: Connection) -> None:
        tables = set(inspect(conn).get_table_names())
        if meta.name not in tables:
            if tables & {t.name for t in metadata.sorted_tables}:
                raise SchemaVersionError(
                    f"metadata store {self.safe_url} has ultron tables but no schema version; "
                    "move it aside and start a new store"
                )
            metadata.create_all(conn)
            conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            return
        row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"metadata store {self.safe_url} has schema version {found}, newer than this "
                f"ultron_nb understands ({SCHEMA_VERSION}); upgrade ultron_nb"
            )
        while found < SCHEMA_VERSION:
            step = MIGRATIONS.get(found)
            if step is None:
                raise SchemaVersionError(
                    f"metadata store {self.safe_url} has schema version {found}, which cannot "
                    f"be migrated to {SCHEMA_VERSION}"
                )
            log.info("migrating metadata store from schema %s to %s", found, found + 1)
            step(conn)
            found += 1
            conn.execute(
                meta.update().where(meta.c.key == "schema_version").values(value=str(found))
            )
        metadata.create_all(conn, checkfirst=True)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: all or nothing; concurrent writers wait their turn.

        Writers are serialised on both backends, so read-then-write sequences (the next
        version of a flow, say) are safe: SQLite by ``BEGIN IMMEDIATE``, PostgreSQL by a
        transaction-scoped advisory lock.
        """
        with self.engine.connect().execution_options(ultron_write=True) as conn, conn.begin():
            if not self.is_sqlite:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_ID})")
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (a consistent snapshot)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
