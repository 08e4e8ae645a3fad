"""The ultron-topic connector: building its jar (cached by digest) and what it reads.

The build tests compile the real Java sources with the real ``javac``. The reading tests run
the connector in PyFlink's in-process mini cluster (bounded); the live behaviour on the real
cluster is tested in ``tests/services/test_live_topics.py``.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ultron_nb.engines.flink import connector, ddl
from ultron_nb.engines.flink.submit import collect
from ultron_nb.engines.topics import LocalTopic, segment_name
from ultron_nb.errors import EngineError


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    copy = tmp_path / "java"
    shutil.copytree(connector.SOURCES, copy)
    return copy


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    built: list[Path] = []
    real = connector._build

    def counting(src: Path, target: Path) -> None:
        built.append(target)
        real(src, target)

    monkeypatch.setattr(connector, "_build", counting)
    return built


def test_the_jar_is_built_once_then_cached_and_rebuilt_when_a_source_changes(
    tmp_path: Path, sources: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = _count_builds(monkeypatch)
    cache = tmp_path / "cache"
    # Two builders at once (threads here; the lock is a file lock, so processes too).
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(
        connector.connector_jar(cache_dir=cache, sources=sources))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1] and len(built) == 1
    jar = results[0]
    assert jar.name.startswith(f"ultron-topic-{connector.flink_version()}-")
    import zipfile

    with zipfile.ZipFile(jar) as z:
        names = set(z.namelist())
        service = z.read("META-INF/services/org.apache.flink.table.factories.Factory")
    assert "ultron/flink/topic/TopicSource.class" in names
    assert service.decode().strip() == "ultron.flink.topic.TopicTableFactory"
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == [jar.name]

    # A cache hit: same path, nothing built.
    assert connector.connector_jar(cache_dir=cache, sources=sources) == jar
    assert len(built) == 1

    # A changed source is a new digest, so a new jar.
    java = sources / "src" / "ultron" / "flink" / "topic" / "TopicRecord.java"
    java.write_text(java.read_text() + "\n// changed\n")
    rebuilt = connector.connector_jar(cache_dir=cache, sources=sources)
    assert rebuilt != jar and rebuilt.is_file() and len(built) == 2


def test_a_compile_error_is_one_line_and_leaves_no_jar(
    tmp_path: Path, sources: Path,
) -> None:
    java = sources / "src" / "ultron" / "flink" / "topic" / "TopicRecord.java"
    java.write_text(java.read_text().replace("final class TopicRecord {", "final class {"))
    cache = tmp_path / "cache"
    with pytest.raises(EngineError, match=r"failed \(javac\): .*TopicRecord\.java"):
        connector.connector_jar(cache_dir=cache, sources=sources)
    assert not list(cache.glob("*.jar")) and not list(cache.glob(".build-*"))


def test_without_a_jdk_the_error_says_what_to_install(
    tmp_path: Path, sources: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(EngineError, match=r"javac.*openjdk-17-jdk-headless"):
        connector.connector_jar(cache_dir=tmp_path / "cache", sources=sources)


# ------------------------------------------------------------------ reading (mini cluster)
T0 = datetime(2025, 1, 1)
SHAPE = ddl.TableShape((("id", "BIGINT"), ("ts", "TIMESTAMP(3)")), "ts", None)


def _rows(ids: range, minute: int) -> list[dict[str, Any]]:
    return [{"id": i, "ts": (T0 + timedelta(minutes=minute, seconds=i % 60))
             .isoformat(" ", "milliseconds")} for i in ids]


def _collect(statements: list[str], query: str) -> list[tuple[Any, ...]]:
    conf = {"pipeline.jars": connector.connector_jar_url()}
    return collect(statements, query, limit=10**6, mode="stream", conf=conf)[1]


@pytest.mark.flink
def test_a_long_backlog_is_read_in_segment_order_without_a_late_row(tmp_path: Path) -> None:
    """40 one-minute segments per partition, with no watermark delay: read in any other
    order than the segments', whole minutes would be late and dropped from their window."""
    topic = LocalTopic(tmp_path / "t", 2, [("id", "BIGINT"), ("ts", "TIMESTAMP(3)")],
                       "ts").create()
    for minute in reversed(range(40)):  # created newest first: creation order is no guide
        for k in range(2):
            base = (k * 40 + minute) * 100
            lines = "".join(json.dumps(r) + "\n" for r in _rows(range(base, base + 25), minute))
            (topic.partition_dir(k) / segment_name(minute)).write_text(lines)
    plan = ddl.topic_source("t", topic.path, SHAPE, mode="bounded")
    rows = _collect(plan.statements, """
        SELECT window_start, COUNT(*) AS n FROM TABLE(
          TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end
    """)
    assert sorted((r[0], r[1]) for r in rows) == [
        (T0 + timedelta(minutes=m), 50) for m in range(40)]


@pytest.mark.flink
def test_a_node_output_is_read_per_sink_subtask_in_counter_order_committed_files_only(
    tmp_path: Path,
) -> None:
    out = ddl.output_folder(tmp_path / "inst")
    out.mkdir(parents=True)

    def part(name: str, ids: list[int]) -> None:
        (out / name).write_text("".join(
            json.dumps({"id": i, "ts": "2025-01-01 00:00:00.000"}) + "\n" for i in ids))

    part("part-aa-0-10", [5, 6])  # after counter 2 (numeric order, not by name)
    part("part-aa-0-2", [3, 4])
    part("part-aa-0-0", [1, 2])
    part("part-aa-1-0", [100])
    part(".part-aa-0-11.inprogress.zz", [999])  # not committed: never read
    part("part-aa-2-0", [555])  # a subtask the reader was not told about
    plan = ddl.output_source("up", tmp_path / "inst", SHAPE, 2, mode="bounded")
    ids = [r[0] for r in _collect(plan.statements, "SELECT id FROM up")]
    assert sorted(ids) == [1, 2, 3, 4, 5, 6, 100]
    assert [i for i in ids if i < 100] == [1, 2, 3, 4, 5, 6]


@pytest.mark.flink
def test_the_watermark_is_pushed_into_the_source_which_has_a_reader_per_partition_at_most(
    tmp_path: Path,
) -> None:
    """A reader without a partition would hold the watermark back for ever: the source runs
    with min(parallelism, partitions) subtasks; the watermark is generated per partition
    inside it (pushed down), not by an operator after it."""
    from pyflink.table import ExplainDetail

    from ultron_nb.engines.flink.submit import table_environment

    topic = LocalTopic(tmp_path / "t", 2, [("id", "BIGINT"), ("ts", "TIMESTAMP(3)")],
                       "ts").create()
    shape = ddl.TableShape(SHAPE.columns, "ts", "1 s")
    env = table_environment("stream", {"pipeline.jars": connector.connector_jar_url(),
                                       "parallelism.default": "4"})
    for statement in ddl.topic_source("t", topic.path, shape, mode="live").statements:
        env.execute_sql(statement)
    text = env.explain_sql("SELECT id, COUNT(*) FROM t GROUP BY id",
                           ExplainDetail.JSON_EXECUTION_PLAN)
    assert "TableSourceScan(table=[[default_catalog, default_database, __t_src, " \
           "watermark=[-(ts, 1000:INTERVAL SECOND)]" in text
    assert "WatermarkAssigner" not in text.split("== Optimized Physical Plan ==")[1]
    graph = json.loads(text.split("== Physical Execution Plan ==")[1])
    parallelism = {n["type"].split("[")[0]: n["parallelism"] for n in graph["nodes"]}
    assert parallelism["Source: UltronTopic"] == 2 and parallelism["GroupAggregate"] == 4
