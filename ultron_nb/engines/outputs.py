"""Node outputs on disk: what kind each is, and the one way every reader reads them.

A node instance records where its output lives (``node_instances.output``: ``path``,
``columns``, ``format`` ...). Three layouts exist:

- ``topic``: a local topic (``<path>/_topic.json``, partitions of ordered segments) — a
  resource, or what ``backtrack prepare`` writes;
- ``flink``: a Flink node's sink directory (``<path>/_ultron_job.json`` beside
  ``p0000/part-<uuid>-<subtask>-<counter>`` files and the in-progress files Flink is still
  writing, ``.part-... .inprogress.<uuid>``); every row carries the producer's watermark in
  the hidden column ``__wm``;
- ``files``: files a DuckDB or Python node run wrote (Parquet, JSON lines, CSV), or a
  dataset's files.

:func:`layout` tells which; :func:`table_files` lists what to read in order; :func:`readable`
snapshots the complete lines of files Flink is still writing; :func:`read_frame` and
:func:`read_rows` read them. Previews, DuckDB nodes, Python nodes' ``ctx.input_frame`` all go
through here, so a row is read the same way everywhere.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ultron_nb.engines.duckdb.connection import detect_format, duckdb_type
from ultron_nb.engines.duckdb.query import FORMATS, TableFiles, read_table
from ultron_nb.engines.flink import ddl
from ultron_nb.engines.topics import MANIFEST, LocalTopic
from ultron_nb.errors import DataError, NotFoundError

if TYPE_CHECKING:
    import pandas as pd

JOB_FILE = ddl.JOB_FILE
WATERMARK_COLUMN = ddl.WATERMARK_COLUMN

Layout = Literal["topic", "flink", "files"]


def layout(output: Mapping[str, Any]) -> Layout:
    """The layout of a recorded output (see the module docstring)."""
    recorded = output.get("layout")
    if recorded in ("topic", "flink", "files"):
        return recorded  # type: ignore[return-value]
    path = Path(str(output.get("path") or ""))
    if (path / MANIFEST).is_file():
        return "topic"
    if (path / JOB_FILE).is_file():
        return "flink"
    return "files"


# ---------------------------------------------------------------- Flink sink files
def read_output_file(path: Path) -> bytes:
    """The content of one file of :func:`flink_files`, complete lines only (b"" if gone).

    An in-progress part file that a checkpoint commits (renames) after the listing is read
    under its committed name, so no row written before the listing is missed; the
    unfinished last line of a file being written is left out.
    """
    committed = ddl.committed_name(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        try:
            return committed.read_bytes() if committed else b""
        except FileNotFoundError:
            return b""  # the output was cleared by a fresh start
    return data[:data.rfind(b"\n") + 1] if committed else data


def flink_files(folder: Path, *, in_progress: bool = True) -> list[Path]:
    """Files of a Flink node instance's output in write order (committed, then in progress).

    In-progress files are listed first: a file committed between the two listings then
    shows up as committed (its in-progress entry dropped) instead of in neither.
    """
    out_dir = ddl.output_folder(folder)
    pending = ddl.in_progress_files(out_dir) if in_progress else []
    files = [p for subtask in sorted(ddl.part_files(out_dir).items()) for p in subtask[1]]
    committed = set(files)
    return files + [p for p in pending if ddl.committed_name(p) not in committed]


def read_json_lines(paths: Sequence[Path], limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of JSON-lines files, in order; the last ``limit`` of them."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            text = read_output_file(path).decode(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the unfinished last line of an in-progress file
    if limit is not None and len(rows) > limit:
        rows = rows[-limit:]
    return rows


def first_event_ms(output: Mapping[str, Any], *, lines: int = 64) -> int | None:
    """Where a Flink node's output starts in event time (epoch ms): the earliest time among
    the first ``lines`` rows each sink subtask wrote; None while nothing is written."""
    column = output.get("time_column")
    if layout(output) != "flink" or not column:
        return None
    from datetime import datetime

    folder = Path(str(output["path"]))
    firsts: dict[int, Path] = {}
    for subtask, files in ddl.part_files(ddl.output_folder(folder)).items():
        firsts[subtask] = files[0]
    if not firsts:  # nothing committed yet: the oldest file still being written
        pending = ddl.in_progress_files(ddl.output_folder(folder))
        if pending:
            firsts[0] = pending[0]
    best: int | None = None
    for path in firsts.values():
        for row in read_json_lines([path])[:lines]:
            value = row.get(column)
            if not value:
                continue
            try:
                when = datetime.fromisoformat(str(value).replace("Z", "").replace("T", " "))
            except ValueError:
                continue
            ms = int((when - datetime(1970, 1, 1)).total_seconds() * 1000)
            best = ms if best is None else min(best, ms)
    return best


# ---------------------------------------------------------------- one table of files
def table_files(name: str, output: Mapping[str, Any] | None, *, what: str) -> TableFiles:
    """Flow table ``name`` (a node's recorded ``output``) as the files to read, in order."""
    if not output or not output.get("path"):
        raise DataError(f"{what}: input {name!r} has recorded no output to read (yet)")
    path = Path(str(output["path"]))
    columns = tuple((str(c), duckdb_type(str(t))) for c, t in output.get("columns") or [])
    kind = layout(output)
    if kind == "topic":  # partition by partition, in order
        topic = LocalTopic.open(path)
        files = [str(seg) for k in range(topic.partitions) for seg in topic.segments(k)]
        if not columns:
            columns = tuple((c, duckdb_type(t)) for c, t in topic.columns)
        return TableFiles(name, tuple(files), "json", columns)
    if kind == "flink":
        # With the files still being written: rows up to the watermark that fired a run
        # may not be committed yet (a file is committed after it rolls, at a checkpoint).
        return TableFiles(name, tuple(str(p) for p in flink_files(path)), "json", columns)
    if path.is_file():
        fmt = str(output.get("format") or detect_format(path.name) or "")
        if fmt not in FORMATS:
            raise DataError(f"{what}: input {name!r}: cannot tell the format of {path}")
        return TableFiles(name, (str(path),), fmt, columns)
    if not path.exists():
        raise DataError(f"{what}: input {name!r}: nothing at {path}")
    found = sorted(p for p in path.rglob("*") if p.is_file() and detect_format(p.name)
                   and not any(part.startswith((".", "_"))
                               for part in p.relative_to(path).parts))
    fmt = str(output.get("format") or "")
    if not fmt:  # what the node wrote (a Python node's files, say)
        formats = sorted({str(detect_format(p.name)) for p in found})
        if len(formats) > 1:
            raise DataError(f"{what}: input {name!r} at {path} mixes formats "
                            f"({', '.join(formats)})")
        fmt = formats[0] if formats else "parquet"
    return TableFiles(name, tuple(str(p) for p in found if detect_format(p.name) == fmt),
                      fmt, columns)


@contextmanager
def readable(tables: Sequence[TableFiles]) -> Iterator[list[TableFiles]]:
    """``tables`` with every file a Flink sink is still writing replaced by a snapshot of
    its complete lines, in a temporary directory that lasts as long as the context."""
    with tempfile.TemporaryDirectory(prefix="ultron-read-") as tmp:
        ready: list[TableFiles] = []
        for table in tables:
            files: list[str] = []
            for name in table.files:
                path = Path(name)
                if ddl.committed_name(path) is None:
                    files.append(name)
                    continue
                data = read_output_file(path)
                if data:
                    snapshot = Path(tmp) / f"{len(files)}-{table.name}.jsonl"
                    snapshot.write_bytes(data)
                    files.append(str(snapshot))
            ready.append(replace(table, files=tuple(files)))
        yield ready


def read_frame(name: str, output: Mapping[str, Any] | None, *, what: str,
               limit: int | None = None) -> pd.DataFrame:
    """Flow table ``name`` (an upstream's recorded ``output``) as a typed DataFrame: every
    complete row, the last ``limit`` when given (an empty frame of its columns if none)."""
    with readable([table_files(name, output, what=what)]) as ready:
        return read_table(ready[0], limit=limit)


# ---------------------------------------------------------------- rows for previews
def typed_frame(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]
                ) -> pd.DataFrame:
    """JSON rows as a DataFrame with ``columns`` (Flink types); timestamps parsed."""
    import pandas as pd

    names = [n for n, _ in columns] if columns else None
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != WATERMARK_COLUMN}
                          for r in rows], columns=names)
    for n, t in columns:
        if t.upper().startswith("TIMESTAMP") and n in frame:
            # ISO8601: Flink drops a zero fraction ("00:04:04"), so the values mix formats;
            # format inference from the first value would turn the others into NaT.
            frame[n] = pd.to_datetime(frame[n].astype("string").str.replace("Z", "", regex=False),
                                      errors="coerce", format="ISO8601")
    return frame


def read_rows(path: Path, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` JSON rows under ``path``: a local topic (segments by time written),
    a Flink sink directory, one file, or a directory of JSON files."""
    if (path / MANIFEST).is_file():
        topic = LocalTopic.open(path)
        files = [seg for k in range(topic.partitions) for seg in topic.segments(k)]
        files.sort(key=lambda p: p.stat().st_mtime)
        return read_json_lines(files, limit)
    if (path / JOB_FILE).is_file():
        return read_json_lines(flink_files(path), limit)
    if path.is_file():
        return read_json_lines([path], limit)
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file()
                        and not p.name.startswith((".", "_"))), key=lambda p: p.stat().st_mtime)
        return read_json_lines(files, limit)
    raise NotFoundError(f"no data at {path}")


def preview(output: Mapping[str, Any], limit: int) -> pd.DataFrame:
    """The last ``limit`` rows of a recorded output, typed by its columns."""
    columns = [(str(c), str(t)) for c, t in output.get("columns") or []]
    kind = layout(output)
    if kind == "files":  # Parquet / CSV / JSON a run wrote
        table = table_files("output", output, what="preview")
        if not table.files:
            raise DataError(f"{output.get('path')}: the node has not written output yet")
        return read_table(table, limit=limit)
    return typed_frame(read_rows(Path(str(output["path"])), limit), columns)
