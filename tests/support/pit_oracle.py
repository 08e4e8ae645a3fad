"""A plain-Python point-in-time oracle, independent of DuckDB, Arrow and pandas' merge_asof.

It follows the definitions word for word: a sample (key, t, known_at) sees the versions of its
key with ``version_time <= t`` (and ``>= t - ttl``, and ``ingest <= known_at`` in known-time
mode); of those it takes the latest version time, then the latest ingest time, then the latest
write, then the later row of that write.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Version:
    key: Any
    version_time: datetime  # naive UTC
    ingest: Any  # naive UTC datetime, or None: ordered by write then position
    write: int
    position: int
    values: dict[str, Any]

    def rank(self) -> tuple:
        ingest = self.ingest if self.ingest is not None else datetime.min
        return (self.version_time, ingest, self.write, self.position)


class Oracle:
    def __init__(self) -> None:
        self.by_key: dict[Any, list[Version]] = defaultdict(list)
        self.writes = 0

    def write(self, rows: list[dict[str, Any]], key: str, version_time: str,
              ingest: str | None = None) -> None:
        """Record one write's rows (dicts with naive-UTC datetimes), in input order."""
        self.writes += 1
        for pos, row in enumerate(rows):
            if row[key] is None:
                continue
            values = {c: v for c, v in row.items() if c not in (key, version_time, ingest)}
            self.by_key[row[key]].append(Version(row[key], row[version_time],
                                                 row[ingest] if ingest else None, self.writes,
                                                 pos, values))

    def lookup(self, key: Any, t: datetime | None, *, known_at: datetime | None = None,
               ttl: timedelta | None = None) -> Version | None:
        if key is None or t is None:
            return None
        best: Version | None = None
        for v in self.by_key.get(key, ()):
            if v.version_time > t:
                continue
            if ttl is not None and v.version_time < t - ttl:
                continue
            if known_at is not None and v.ingest is not None and v.ingest > known_at:
                continue
            if best is None or v.rank() > best.rank():
                best = v
        return best
