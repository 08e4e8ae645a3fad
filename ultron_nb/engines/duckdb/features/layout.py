"""A feature table on disk: its metadata, one immutable Parquet file per write, the lock.

::

    ROOT/<table>/_table.json            layout version, key columns, version-time column, columns
    ROOT/<table>/w-00000001.parquet     the rows of write 1 (input order, repeats removed)
    ROOT/<table>/s-00000001.parquet     the rows write 1 superseded: (write, row) pairs
    ROOT/<table>/.lock                  held (flock) while a write runs

A write's files are published under the table lock: the ``s-`` file first, then the ``w-`` file
(the commit point: a reader ignores an ``s-`` file whose ``w-`` file does not exist yet). Files
are never modified, so a reader that lists the directory and reads what it found is consistent.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ultron_nb.errors import ConfigError, NotFoundError

FORMAT = 2
META = "_table.json"
INGEST = "__ultron_ingest"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_WRITE = re.compile(r"^w-(\d{8})\.parquet$")
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class TableMeta:
    """What a feature table is keyed by and holds (``columns``: key, version time, features)."""

    name: str
    key: tuple[str, ...]
    version_time: str
    columns: tuple[tuple[str, str], ...]

    @property
    def features(self) -> list[str]:
        return [c for c, _ in self.columns if c not in self.key and c != self.version_time]


def check_name(table: str) -> str:
    if not isinstance(table, str) or not _NAME.match(table):
        raise ConfigError(f"feature table name {table!r}: use letters, digits and "
                          "underscores, not starting with a digit")
    return table


class TableDir:
    """The folder of one feature table."""

    def __init__(self, root: Path, table: str):
        self.name = check_name(table)
        self.path = root / table

    def exists(self) -> bool:
        return (self.path / META).is_file()

    def meta(self) -> TableMeta:
        path = self.path / META
        if not path.is_file():
            raise NotFoundError(f"feature table {self.name!r} does not exist in "
                                f"{self.path.parent}")
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ConfigError(f"feature table {self.name!r} ({self.path}) has layout "
                              f"{data.get('format', 1)}; this version reads layout {FORMAT}: "
                              "write its versions again into a new table")
        return TableMeta(self.name, tuple(data["key"]), str(data["version_time"]),
                         tuple((str(c), str(t)) for c, t in data["columns"]))

    def write_meta(self, meta: TableMeta) -> None:
        path = self.path / META
        if path.is_file():
            return
        body = {"format": FORMAT, "table": meta.name, "key": list(meta.key),
                "version_time": meta.version_time, "columns": [list(c) for c in meta.columns]}
        tmp = self.path / f".{META}.tmp"
        tmp.write_text(json.dumps(body, indent=2))
        os.replace(tmp, path)

    def writes(self) -> list[int]:
        """The sequence numbers of the published writes, in order."""
        if not self.path.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.path.iterdir() if (m := _WRITE.match(p.name)))

    def rows_file(self, seq: int) -> Path:
        return self.path / f"w-{seq:08d}.parquet"

    def superseded_file(self, seq: int) -> Path:
        return self.path / f"s-{seq:08d}.parquet"

    def tmp_file(self, kind: str, seq: int) -> Path:
        return self.path / f".{kind}-{seq:08d}.{os.getpid()}.{threading.get_ident()}.tmp"

    def publish(self, seq: int, rows_tmp: Path, superseded_tmp: Path | None) -> None:
        """Make write ``seq`` visible (call under :meth:`lock`)."""
        target = self.rows_file(seq)
        if target.exists():
            raise ConfigError(f"feature table {self.name!r}: write {seq} exists already")
        if superseded_tmp is not None:
            os.replace(superseded_tmp, self.superseded_file(seq))
        os.replace(rows_tmp, target)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across threads of this process and across processes (``flock``)."""
        self.path.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        with _LOCKS_GUARD:
            thread_lock = _LOCKS.setdefault(key, threading.Lock())
        with thread_lock, open(self.path / ".lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def list_tables(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / META).is_file())
