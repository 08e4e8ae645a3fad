"""The local topic: the on-disk stand-in for a Kafka topic.

A local topic is a directory::

    TOPIC/
      _topic.json              manifest: partitions, columns, time column, counts (hidden
                               from Flink's filesystem source because it starts with "_")
      p0000/seg-00000000.jsonl ordered segments of partition 0 (JSON lines)
      p0000/seg-00000001.jsonl
      p0001/...

Within a partition, records are ordered by segment number and then by line: exactly the order a
Kafka partition has. Writers create a segment under a hidden name (".seg-...") and link it into
place when it is complete, so readers never see half a file. Flink reads a topic with the
``ultron-topic`` connector (:mod:`ultron_nb.engines.flink.connector`): one split per partition,
its segments strictly in sequence.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ultron_nb.errors import DataError

MANIFEST = "_topic.json"


def partition_name(index: int) -> str:
    return f"p{index:04d}"


def segment_name(seq: int) -> str:
    return f"seg-{seq:08d}.jsonl"


@dataclass
class LocalTopic:
    """A local topic rooted at ``path`` with ``partitions`` ordered partitions."""

    path: Path
    partitions: int = 1
    columns: list[tuple[str, str]] = field(default_factory=list)
    time_column: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path) -> LocalTopic:
        """Open an existing topic (its manifest must exist)."""
        root = Path(path)
        manifest = root / MANIFEST
        if not manifest.is_file():
            raise DataError(f"{root}: not a local topic (no {MANIFEST})")
        try:
            data = json.loads(manifest.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{manifest}: invalid manifest: {exc}") from None
        return cls(
            path=root,
            partitions=int(data["partitions"]),
            columns=[(str(c), str(t)) for c, t in data.get("columns", [])],
            time_column=data.get("time_column"),
            extra=dict(data.get("extra", {})),
        )

    def create(self) -> LocalTopic:
        """Create the directories and manifest (idempotent)."""
        if self.partitions < 1:
            raise DataError(f"{self.path}: a topic needs at least one partition")
        for k in range(self.partitions):
            self.partition_dir(k).mkdir(parents=True, exist_ok=True)
        self.write_manifest()
        return self

    def write_manifest(self, **extra: Any) -> None:
        self.extra.update(extra)
        body = {
            "partitions": self.partitions,
            "columns": [list(c) for c in self.columns],
            "time_column": self.time_column,
            "extra": self.extra,
        }
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(body, indent=2, default=str))
        os.replace(tmp, self.path / MANIFEST)

    def partition_dir(self, index: int) -> Path:
        return self.path / partition_name(index)

    def segments(self, index: int) -> list[Path]:
        """Complete segments of one partition, in order."""
        folder = self.partition_dir(index)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.name.startswith("seg-"))

    def next_segment(self, index: int) -> Path:
        existing = self.segments(index)
        seq = int(existing[-1].name[4:12]) + 1 if existing else 0
        return self.partition_dir(index) / segment_name(seq)

    def append(self, index: int, records: Iterable[Mapping[str, Any]]) -> Path | None:
        """Write ``records`` as the next segment of partition ``index``, atomically.

        The segment is written under a hidden name, then linked to the next free segment
        name (a link never replaces an existing file), so concurrent writers of one
        partition each get their own segment number and no reader sees half a file.
        """
        lines = [json.dumps(r, default=str, separators=(",", ":")) for r in records]
        if not lines:
            return None
        folder = self.partition_dir(index)
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".seg-", suffix=".tmp", dir=folder)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write("\n".join(lines) + "\n")
            os.chmod(tmp, 0o644)
            while True:
                target = self.next_segment(index)
                try:
                    os.link(tmp, target)
                    return target
                except FileExistsError:
                    continue  # another writer took this number: take the next one
        finally:
            tmp.unlink(missing_ok=True)

    def read(self) -> list[dict[str, Any]]:
        """Every record of every partition (small topics; tests and previews)."""
        rows: list[dict[str, Any]] = []
        for k in range(self.partitions):
            for seg in self.segments(k):
                with seg.open() as fh:
                    rows.extend(json.loads(line) for line in fh if line.strip())
        return rows
