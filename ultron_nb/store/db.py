"""Opening the metadata store: engine, transactions, schema version and migrations.

SQLite (the default) runs in WAL mode with a busy timeout, and write transactions begin with
``BEGIN IMMEDIATE``, so concurrent processes queue instead of failing or losing writes.
PostgreSQL is used as it is, by URL.

Faults of the machine are one line naming the store: a store file that cannot be written
(a read-only file system, a file without write permission) is opened read-only, so reading
verbs work and a write raises :class:`StoreError` naming the file; a full disk, a missing
folder or a URL that is not a database URL are one line too (:meth:`Database.describe`). A
new SQLite store is created ``0600`` (and its folder ``0700``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from ultron_nb.errors import SchemaVersionError, StoreError
from ultron_nb.files import private_dir, private_file
from ultron_nb.store.schema import (
    SCHEMA_VERSION,
    experiments,
    flow_versions,
    jobs,
    meta,
    metadata,
    node_bodies,
    node_instances,
    savepoints,
)
from ultron_nb.urls import split_credentials

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
WRITE_LOCK_ID = 0x756C7472  # "ultr": the advisory lock that serialises PostgreSQL writers
#: Less free space than this under the store's folder: an I/O error there is a full disk.
NEARLY_FULL_BYTES = 256 * 1024
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@/\s]*@")


def _v1_to_v2(conn: Connection) -> None:
    """Reference counts by explicit holds; the trigger of a scheduler run."""
    conn.exec_driver_sql("ALTER TABLE experiment_nodes ADD COLUMN released_at FLOAT")
    conn.exec_driver_sql("ALTER TABLE jobs ADD COLUMN trigger_id INTEGER")
    # Experiments the user ended before v2 let go of their instances then.
    conn.exec_driver_sql(
        "UPDATE experiment_nodes SET released_at = (SELECT updated_at FROM experiments "
        "WHERE experiments.id = experiment_nodes.experiment_id) WHERE experiment_id IN "
        "(SELECT id FROM experiments WHERE state IN ('stopped', 'canceled', 'failed'))")


def _v2_to_v3(conn: Connection) -> None:
    """Node bodies stored once by content (``node_bodies``); no credentials in targets."""
    from ultron_nb.store.flows import store_bodies

    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA secure_delete = ON")  # no old password in free pages
    node_bodies.create(conn, checkfirst=True)
    for row in conn.execute(select(flow_versions.c.id, flow_versions.c.spec)).all():
        spec = store_bodies(conn, row.spec)
        if spec != row.spec:
            conn.execute(update(flow_versions).where(flow_versions.c.id == row.id)
                         .values(spec=spec))
    for table in (experiments, node_instances, jobs):
        rows = conn.execute(select(table.c.id, table.c.target)
                            .where(table.c.target.like("%@%"))).all()
        for row in rows:
            clean = split_credentials(row.target)[0]
            if clean != row.target:
                conn.execute(update(table).where(table.c.id == row.id).values(target=clean))


def _v3_to_v4(conn: Connection) -> None:
    """A table of savepoints (their lineage); the stopped jobs' savepoints recorded in it."""
    from ultron_nb.store.savepoints import backfill

    savepoints.create(conn, checkfirst=True)
    backfill(conn)


# Migrations from version N to N+1: MIGRATIONS[N](connection).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3,
                                                       3: _v3_to_v4}


def mask_password(url: str) -> str:
    """``url`` with any ``:password@`` masked, even when it does not parse."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def _read_only_reason(path: Path) -> str:
    """Why the SQLite file ``path`` (or the folder it would be created in) cannot be
    written, or "" when it can."""
    folder = path.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        return ""
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is not writable"
    if not os.access(folder, os.W_OK):
        wal, shm = (path.with_name(path.name + s) for s in ("-wal", "-shm"))
        if not (wal.exists() and shm.exists() and os.access(shm, os.W_OK)):
            return f"its folder {folder} is not writable"
    return ""


def _sqlite_setup(engine: Engine, *, read_only: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not read_only:
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
    """A connection to the metadata store at ``url``.

    A SQLite store whose folder does not exist is created with it, unless
    ``create_parent`` is false (then: StoreError naming the folder). ``read_only`` says why
    the store cannot be written ("" when it can).
    """

    def __init__(self, url: str, *, create_parent: bool = True):
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.path: Path | None = None
        self.read_only = ""
        try:
            parsed = make_url(self.url)
        except (ArgumentError, ValueError):
            raise StoreError(
                f"metadata store URL {mask_password(url)!r} is not a database URL (e.g. "
                "sqlite:////path/to/ultron.db or postgresql://user@host/db)") from None
        if self.is_sqlite:
            self.engine = self._sqlite_engine(parsed.database, create_parent)
        else:
            try:
                self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=4)
            except (SQLAlchemyError, ImportError, ValueError) as exc:
                raise StoreError(f"cannot use metadata store {self.safe_url}: "
                                 f"{mask_password(str(exc))}") from None
        self._ready = False
        self._lock = threading.Lock()

    def _sqlite_engine(self, database: str | None, create_parent: bool) -> Engine:
        connect_args = {"timeout": BUSY_TIMEOUT_MS / 1000}
        if not database or database == ":memory:" or database.startswith("file:"):
            engine = create_engine(self.url, poolclass=NullPool, connect_args=connect_args)
            _sqlite_setup(engine)
            return engine
        path = self.path = Path(database).absolute()
        if not path.parent.is_dir():
            if not create_parent:
                raise StoreError(f"metadata store {path}: the folder {path.parent} does not "
                                 "exist (create it first, or choose another db_url)")
            try:
                private_dir(path.parent)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of the metadata store {path}: "
                                 f"{exc.strerror}") from None
        self.read_only = _read_only_reason(path)
        if self.read_only and not path.exists():
            raise StoreError(f"cannot create the metadata store {path}: {self.read_only}")
        if not self.read_only:
            try:
                private_file(path)
            except OSError as exc:
                raise StoreError(f"cannot create the metadata store {path}: "
                                 f"{self._os_reason(exc)}") from None
            engine = create_engine(self.url, poolclass=NullPool, connect_args=connect_args)
        else:
            # Reading works without creating the -wal/-shm files a writer needs (immutable:
            # nothing can write it while it stays read-only).
            shm = path.with_name(path.name + "-shm")
            uri = f"file:{quote(str(path))}?mode=ro" + ("" if shm.exists() else "&immutable=1")
            engine = create_engine("sqlite://", poolclass=NullPool, creator=lambda: (
                sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                                check_same_thread=False)))
        _sqlite_setup(engine, read_only=bool(self.read_only))
        return engine

    def _os_reason(self, exc: OSError) -> str:
        if self.path is not None and _disk_full(self.path.parent):
            return "no space left on the disk"
        return exc.strerror or str(exc)

    @property
    def safe_url(self) -> str:
        """The URL without its password (for messages)."""
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):
            return mask_password(self.url)

    @property
    def where(self) -> str:
        """The store as messages name it: its file (SQLite) or its URL, masked."""
        return str(self.path) if self.path is not None else self.safe_url

    def describe(self, exc: BaseException) -> str:
        """One line about a failure of the store's database: what and where."""
        orig = getattr(exc, "orig", None) or exc
        lines = str(orig).strip().splitlines()
        text = lines[0] if lines else type(orig).__name__
        if self.path is not None:
            if "full" in text or _disk_full(self.path.parent):
                return f"no space left on the disk holding the metadata store {self.path} " \
                       f"({text})"
            if "readonly" in text or "read-only" in text:
                return f"the metadata store {self.path} is read-only ({text})"
        return f"metadata store {self.where}: {text}"

    def ensure_schema(self) -> None:
        """Create the tables of a new store, migrate an older one, refuse a newer one."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            if self.read_only:
                with self.read() as conn:
                    self._check_read_only(conn)
            else:
                with self.write() as conn:
                    self._ensure(conn)
            self._ready = True

    def _check_read_only(self, conn: Connection) -> None:
        """A read-only store can be read only when its schema is the current one."""
        tables = set(inspect(conn).get_table_names())
        row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")
                           ).first() if meta.name in tables else None
        found = int(row[0]) if row else 0
        if found == SCHEMA_VERSION:
            return
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"metadata store {self.where} has schema version {found}, newer than this "
                f"ultron_nb understands ({SCHEMA_VERSION}); upgrade ultron_nb")
        what = f"schema version {found}" if found else "no ultron tables"
        raise StoreError(f"the metadata store {self.where} is read-only ({self.read_only}) "
                         f"and has {what}: open it once where it can be written")

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

    def check_writable(self) -> None:
        """Refuse at once (one line naming the file) when the store cannot be written."""
        if self.read_only:
            raise StoreError(f"cannot write to the metadata store {self.where}: "
                             f"{self.read_only} (reading verbs still work)")

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: all or nothing; concurrent writers wait their turn.

        Writers are serialised on both backends, so read-then-write sequences (the next
        version of a flow, say) are safe: SQLite by ``BEGIN IMMEDIATE``, PostgreSQL by a
        transaction-scoped advisory lock. A read-only store refuses at once, naming the file;
        a database failure (full disk, lost connection) is a :class:`StoreError`.
        """
        self.check_writable()
        try:
            with self.engine.connect().execution_options(ultron_write=True) as conn, \
                    conn.begin():
                if not self.is_sqlite:
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_ID})")
                yield conn
        except OperationalError as exc:
            raise StoreError(self.describe(exc)) from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (a consistent snapshot)."""
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except OperationalError as exc:
            raise StoreError(self.describe(exc)) from exc

    def dispose(self) -> None:
        self.engine.dispose()
