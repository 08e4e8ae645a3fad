"""Generated DDL: one ordered reader per partition, watermarks, sinks (no JVM)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ultron_nb.engines.flink import ddl
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.errors import DataError, FlowError

SHAPE = ddl.TableShape((("id", "BIGINT"), ("ts", "TIMESTAMP(3)")), "ts", "5 s")


@pytest.mark.parametrize(("text", "literal"), [
    ("5 s", "INTERVAL '5' SECOND"), ("500 ms", "INTERVAL '0.500' SECOND"),
    ("2 min", "INTERVAL '2' MINUTE"), ("120 s", "INTERVAL '2' MINUTE"),
    ("1 h", "INTERVAL '1' HOUR"), ("90 s", "INTERVAL '90' SECOND"),
])
def test_interval_literals(text: str, literal: str) -> None:
    assert ddl.interval_literal(text) == literal


def test_bad_duration_names_the_value() -> None:
    with pytest.raises(FlowError, match="'soon'"):
        ddl.interval_literal("soon")


@pytest.mark.parametrize("n", [0, 5, 9, 10, 41, 99, 100, 12345678, 99999998, 99999999])
def test_greater_than_regex(n: int) -> None:
    pattern = re.compile(ddl._greater_than(n, 8))
    for m in {0, 1, n - 1, n, n + 1, n + 9, n + 10, n + 1000, 99999999}:
        if 0 <= m < 10**8:
            assert bool(pattern.fullmatch(f"{m:08d}")) == (m > n), (n, m)


def test_column_ddl_with_watermark_and_hidden_watermark_column() -> None:
    assert "WATERMARK FOR `ts` AS `ts` - INTERVAL '5' SECOND" in SHAPE.column_ddl()
    carried = ddl.TableShape(SHAPE.columns, "ts", None, "__wm")
    text = carried.column_ddl()
    assert "`__wm` TIMESTAMP(3)" in text
    assert "WATERMARK FOR `ts` AS COALESCE(`__wm`, TIMESTAMP '1970-01-01 00:00:00')" in text
    assert ddl.TableShape.from_dict(carried.to_dict()) == carried


def _topic(tmp_path: Path, segments_per_partition: int, partitions: int = 2) -> LocalTopic:
    topic = LocalTopic(tmp_path / "t", partitions, [("id", "BIGINT"), ("ts", "TIMESTAMP(3)")],
                       "ts").create()
    n = 0
    for k in range(partitions):
        for _ in range(segments_per_partition):
            topic.append(k, [{"id": n + i, "ts": "2025-01-01 00:00:00.000"} for i in range(3)])
            n += 3
    return topic


def test_live_topic_source_reads_each_partition_backlog_in_order_then_new_files(
    tmp_path: Path,
) -> None:
    topic = _topic(tmp_path, 3)
    plan = ddl.topic_source("clicks", topic.path, SHAPE, mode="live",
                            replay_dir=tmp_path / "replay")
    creates = [s for s in plan.statements if s.startswith("CREATE TEMPORARY TABLE")]
    assert len(creates) == 2  # one reader per partition
    view = plan.statements[-1]
    assert view.startswith("CREATE TEMPORARY VIEW `clicks`") and view.count("UNION ALL") == 1
    assert "SELECT `id`, `ts` FROM `__clicks_p0000`" in view
    for k in range(2):
        root = (tmp_path / "replay" / "clicks" / f"p{k:04d}").resolve()
        backlog = root / "backlog.jsonl"
        ids = [json.loads(x)["id"] for x in backlog.read_text().splitlines()]
        expected = [json.loads(x)["id"] for seg in topic.segments(k)
                    for x in seg.read_text().splitlines()]
        assert ids == expected  # the three segments, concatenated in order
        assert (root / "live").resolve() == topic.partition_dir(k).resolve()
        stmt = creates[k]
        assert "'source.monitor-interval' = '500 ms'" in stmt
        regex = re.search(r"'source.path.regex-pattern' = '([^']+)'", stmt).group(1)
        pattern = re.compile(regex)
        assert pattern.fullmatch(f"{root}/backlog.jsonl")
        assert not pattern.fullmatch(f"{root}/live/seg-00000002.jsonl")  # in the backlog
        assert pattern.fullmatch(f"{root}/live/seg-00000003.jsonl")  # written later
        assert not pattern.fullmatch(f"{root}/live/.seg-00000003.jsonl")


def test_bounded_topic_source_reads_only_the_backlog(tmp_path: Path) -> None:
    topic = _topic(tmp_path, 1)
    plan = ddl.topic_source("t", topic.path, SHAPE, mode="bounded",
                            replay_dir=tmp_path / "replay")
    assert not any("monitor-interval" in s for s in plan.statements)
    backlog = (tmp_path / "replay" / "t" / "p0000" / "backlog.jsonl")
    assert backlog.stat().st_ino == topic.segments(0)[0].stat().st_ino  # a hard link


def test_a_missing_topic_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a local topic"):
        ddl.topic_source("t", tmp_path / "nope", SHAPE, mode="live", replay_dir=tmp_path)


def test_output_source_orders_sink_files_per_subtask(tmp_path: Path) -> None:
    out = ddl.output_folder(tmp_path / "inst")
    out.mkdir(parents=True)
    for subtask, counter, rows in [(0, 10, [3]), (0, 2, [1, 2]), (1, 0, [7]), (0, 0, [0])]:
        (out / f"part-u1-{subtask}-{counter}").write_text(
            "".join(json.dumps({"id": r, "ts": "2025-01-01 00:00:00"}) + "\n" for r in rows))
    (out / ".part-u1-0-11.inprogress.x").write_text("")
    files = ddl.part_files(out)
    assert [p.name for p in files[0]] == ["part-u1-0-0", "part-u1-0-2", "part-u1-0-10"]
    plan = ddl.output_source("up", tmp_path / "inst", SHAPE, 2, mode="live",
                             replay_dir=tmp_path / "replay")
    backlog = (tmp_path / "replay" / "up" / "s0000" / "backlog.jsonl").read_text()
    assert [json.loads(x)["id"] for x in backlog.splitlines()] == [0, 1, 2, 3]
    stmt = plan.statements[0]
    regex = re.compile(re.search(r"'source.path.regex-pattern' = '([^']+)'", stmt).group(1))
    root = (tmp_path / "replay" / "up" / "s0000").resolve()
    assert not regex.fullmatch(f"{root}/live/part-u1-0-10")  # already in the backlog
    assert regex.fullmatch(f"{root}/live/part-u1-0-12")
    assert regex.fullmatch(f"{root}/live/part-u2-0-13")  # after a restart: new prefix
    assert not regex.fullmatch(f"{root}/live/part-u1-1-1")  # the other subtask's


def test_sink_table_rolls_and_has_no_watermark(tmp_path: Path) -> None:
    columns = [("id", "BIGINT NOT NULL"), ("ts", "TIMESTAMP(3) *ROWTIME*")]
    text = ddl.sink_table("s", tmp_path, columns, rollover="4 s")
    assert "`ts` TIMESTAMP(3)" in text and "ROWTIME" not in text and "WATERMARK" not in text
    assert "'sink.rolling-policy.rollover-interval' = '4000 ms'" in text


def test_batch_source_reads_only_data_files(tmp_path: Path) -> None:
    plan = ddl.batch_source("t", tmp_path, SHAPE)
    regex = re.compile(re.search(r"'source.path.regex-pattern' = '([^']+)'",
                                 plan.statements[0]).group(1))
    root = tmp_path.resolve()
    assert regex.fullmatch(f"{root}/p0000/seg-00000001.jsonl")
    assert regex.fullmatch(f"{root}/p0000/part-abc-0-1")
    assert not regex.fullmatch(f"{root}/replay/t/p0000/backlog.jsonl")
    assert "WATERMARK" not in plan.statements[0]


def test_only_bundled_dataset_formats() -> None:
    with pytest.raises(FlowError, match="parquet"):
        ddl.dataset_source("d", Path("/x"), SHAPE, "parquet")
