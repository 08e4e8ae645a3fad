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

A topic is found by its path, so two flows that declare a topic of the same name share it
(``<home>/topics/<name>``: the click-log generator and ``backtrack prepare`` write there).
Sharing is checked, not silent: :func:`check_schema` refuses a declaration whose columns the
topic does not hold (a missing column, or a type its values cannot be read as) in one line —
the reader would otherwise get NULLs. A flow that wants a topic of its own gives it a
``--path``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
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


# ---------------------------------------------------------------- shared topics
_FAMILIES = (
    ("integer", ("TINYINT", "SMALLINT", "INT", "INTEGER", "BIGINT")),
    ("number", ("FLOAT", "DOUBLE", "DECIMAL", "DEC", "NUMERIC", "REAL")),
    ("text", ("STRING", "VARCHAR", "CHAR")),
    ("timestamp", ("TIMESTAMP", "TIMESTAMP_LTZ", "DATE")),
    ("boolean", ("BOOLEAN",)),
)
#: What a declared family can read (JSON values of the held family).
_READS = {"text": None, "integer": {"integer"}, "number": {"integer", "number"},
          "timestamp": {"timestamp"}, "boolean": {"boolean"}}


def _family(sql_type: str) -> str:
    head = sql_type.strip().upper().split("(", 1)[0].split("<", 1)[0].split()[0] \
        if sql_type.strip() else ""
    for family, heads in _FAMILIES:
        if head in heads:
            return family
    return " ".join(sql_type.upper().replace(" NOT NULL", "").split())


def schema_problem(held: Sequence[tuple[str, str]], declared: Sequence[tuple[str, str]]
                   ) -> str | None:
    """Why a reader declaring ``declared`` cannot read a topic holding ``held`` (None: it
    can). Every declared column must be held, with values its type can read."""
    have = {name: typ for name, typ in held}
    for name, typ in declared:
        if name not in have:
            return f"it has no column {name!r}"
        want, got = _family(typ), _family(have[name])
        reads = _READS.get(want, {want})
        if reads is not None and got not in reads:
            return f"its column {name!r} is {have[name]}, not {typ}"
    return None


def check_schema(path: Path, declared: Sequence[tuple[str, str]], *, who: str) -> None:
    """Refuse (in one line) to read the topic at ``path`` with the ``declared`` columns
    when it does not hold them; a topic that does not exist yet is fine."""
    if not declared or not (path / MANIFEST).is_file():
        return
    topic = LocalTopic.open(path)
    if not topic.columns:
        return
    problem = schema_problem(topic.columns, declared)
    if problem:
        held = ", ".join(f"{n} {t}" for n, t in topic.columns)
        raise DataError(f"{who}: the topic at {path} is shared and {problem} (it holds "
                        f"{held}): declare its columns, or give this topic its own --path")


#: A manifest entry (epoch ms) saying every record with an earlier event time is written,
#: in every partition: a writer's promise that a reader may use as a watermark.
COMPLETE_THROUGH = "complete_through"


def complete_through(path: str | Path) -> int | None:
    """The topic's :data:`COMPLETE_THROUGH` mark as its manifest says now (None: none)."""
    try:
        data = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    mark = dict(data.get("extra") or {}).get(COMPLETE_THROUGH)
    return int(mark) if mark is not None else None


class TopicTail:
    """Follows a local topic: each :meth:`poll` returns the records of the segments
    completed since the last one, partition by partition in order (a consumer's view).
    ``offsets`` (partition → segments read) is the position; a new tail from saved
    offsets continues where the last one stopped. A topic not created yet has no records."""

    def __init__(self, path: str | Path, offsets: Mapping[int, int] | None = None):
        self.path = Path(path)
        self.offsets: dict[int, int] = {int(k): int(v) for k, v in (offsets or {}).items()}
        self._topic: LocalTopic | None = None

    @property
    def topic(self) -> LocalTopic | None:
        if self._topic is None and (self.path / MANIFEST).is_file():
            self._topic = LocalTopic.open(self.path)
        return self._topic

    def caught_up(self) -> bool:
        """Has every segment of every partition there is now been read?"""
        topic = self.topic
        return topic is not None and all(
            self.offsets.get(k, 0) >= len(topic.segments(k)) for k in range(topic.partitions))

    def poll(self, limit: int | None = None) -> list[dict[str, Any]]:
        """New records (at most about ``limit``: whole segments are read)."""
        return [r for rows in self.poll_partitions(limit).values() for r in rows]

    def poll_partitions(self, limit: int | None = None) -> dict[int, list[dict[str, Any]]]:
        """New records per partition: one segment of each partition in turn, until about
        ``limit`` records (whole segments) or none is left."""
        topic = self.topic
        if topic is None:
            return {}
        todo = {k: topic.segments(k)[self.offsets.get(k, 0):] for k in range(topic.partitions)}
        out: dict[int, list[dict[str, Any]]] = {}
        total = 0
        while any(todo.values()) and (limit is None or total < limit):
            for k, segments in todo.items():
                if not segments:
                    continue
                with segments.pop(0).open() as fh:
                    rows = [json.loads(line) for line in fh if line.strip()]
                out.setdefault(k, []).extend(rows)
                total += len(rows)
                self.offsets[k] = self.offsets.get(k, 0) + 1
        return out
