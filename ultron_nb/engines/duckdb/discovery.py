"""Finding history files: ``ROOT/date=YYYY-MM-DD/hour=HH/<file>`` and their schemas.

Listing goes through DuckDB's ``glob`` (so any location DuckDB reads works, remote ones
through the filesystems of :mod:`.remote`); hidden files (``.``/``_``) are skipped.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from ultron_nb.engines.duckdb.connection import detect_format, normalize_format, scan_sql
from ultron_nb.engines.duckdb.remote import mask
from ultron_nb.errors import ConfigError, DataError

_HIVE = re.compile(r"date=(\d{4}-\d{2}-\d{2})[/\\]hour=(\d{1,2})[/\\]([^/\\]+)$")


@dataclass(frozen=True)
class HourFile:
    """One data file of the history and the hour partition it sits in."""

    path: str
    date: str
    hour: int

    @property
    def hour_start(self) -> datetime:
        return datetime.fromisoformat(self.date) + timedelta(hours=self.hour)


# ----------------------------------------------------------------------------- discovery
def source_root(source: str | Path) -> str:
    text = str(source)
    if "://" in text:
        return text.rstrip("/")
    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"{path}: no such directory")
    return str(path)


def discover(con: duckdb.DuckDBPyConnection, root: str, fmt: str | None,
             ) -> tuple[list[HourFile], str]:
    """Every visible data file under ``root/date=*/hour=*/`` and the format."""
    pattern = root + "/date=*/hour=*/*"
    found = [str(r[0]) for r in con.execute("SELECT file FROM glob(?)", [pattern]).fetchall()]
    files: list[HourFile] = []
    for path in sorted(found):
        match = _HIVE.search(path)
        if not match or match.group(3).startswith((".", "_")):
            continue
        files.append(HourFile(path, match.group(1), int(match.group(2))))
    fmt = normalize_format(fmt)
    if fmt is None:
        kinds = {detect_format(f.path) for f in files} - {None}
        if len(kinds) > 1:
            examples = {k: next(f.path for f in files if detect_format(f.path) == k)
                        for k in kinds if k}
            raise DataError(f"{mask(root)}: mixed file formats: " + ", ".join(
                f"{k} ({v})" for k, v in sorted(examples.items())))
        if not kinds:
            if files:
                raise ConfigError(f"{mask(root)}: cannot tell the format of "
                                  f"{mask(files[0].path)}; "
                                  "pass fmt='parquet' or fmt='json'")
            fmt = "parquet"
        else:
            fmt = kinds.pop() or "parquet"
        files = [f for f in files if detect_format(f.path) == fmt]
    return files, fmt


def parquet_schemas(con: duckdb.DuckDBPyConnection, paths: list[str]
                    ) -> dict[str, list[tuple[str, str]]]:
    """Top-level (name, DuckDB type) of every Parquet file, from their footers in one call."""
    if not paths:
        return {}
    try:
        rows = con.execute("SELECT file_name, name, duckdb_type, num_children FROM "
                           "parquet_schema(?)", [paths]).fetchall()
    except duckdb.Error:
        return {p: file_schema(con, p, "parquet") for p in paths}
    flat: dict[str, list[tuple[str, str | None, int]]] = defaultdict(list)
    for file, name, typ, children in rows:
        flat[str(file)].append((str(name), typ, int(children or 0)))
    out: dict[str, list[tuple[str, str]]] = {}
    for path in paths:
        elements = flat.get(path)
        if not elements:
            out[path] = file_schema(con, path, "parquet")
            continue
        # Depth-first: the root, then each top-level column followed by its subtree.
        top: list[tuple[str, str]] = []
        i, remaining = 1, elements[0][2]
        while remaining and i < len(elements):
            name, typ, children = elements[i]
            top.append((name, str(typ)))
            pending, i = children, i + 1
            while pending and i < len(elements):
                pending += elements[i][2] - 1
                i += 1
            remaining -= 1
        if any(t == "None" for _, t in top):
            top = file_schema(con, path, "parquet")
        out[path] = top
    return out


def file_schema(con: duckdb.DuckDBPyConnection, path: str, fmt: str) -> list[tuple[str, str]]:
    scan, params = scan_sql(fmt, union_by_name=False)
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {scan}", [[path], *params]).fetchall()
    except duckdb.Error as exc:
        raise DataError(f"{mask(path)}: cannot read as {fmt}: {str(exc).splitlines()[0]}") from None
    return [(str(r[0]), str(r[1])) for r in rows]
