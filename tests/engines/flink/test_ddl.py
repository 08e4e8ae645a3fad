"""Generated DDL: ordered topic sources, watermarks, sinks (no JVM)."""

from __future__ import annotations

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


def test_column_ddl_with_watermark_and_hidden_watermark_column() -> None:
    assert "WATERMARK FOR `ts` AS `ts` - INTERVAL '5' SECOND" in SHAPE.column_ddl()
    carried = ddl.TableShape(SHAPE.columns, "ts", None, "__wm")
    text = carried.column_ddl()
    assert "`__wm` TIMESTAMP(3)" in text
    assert "WATERMARK FOR `ts` AS COALESCE(`__wm`, TIMESTAMP '1970-01-01 00:00:00')" in text
    assert ddl.TableShape.from_dict(carried.to_dict()) == carried


def test_an_epoch_ms_watermark_column_is_a_number_read_back_without_the_session_zone() -> None:
    carried = ddl.TableShape(SHAPE.columns, "ts", None, "__wm", ddl.EPOCH_MS)
    text = carried.column_ddl()
    assert "`__wm` BIGINT" in text
    assert ("WATERMARK FOR `ts` AS COALESCE(`ultron_ms_timestamp`(`__wm`), "
            "TIMESTAMP '1970-01-01 00:00:00')") in text
    assert carried.functions() == [ddl.MS_TO_TIMESTAMP]
    assert ddl.TableShape.from_dict(carried.to_dict()) == carried
    # An instant needs no function of ours; a batch read declares the number, no watermark.
    ltz = ddl.TableShape((("id", "BIGINT"), ("ts", "TIMESTAMP_LTZ(3)")), "ts", None, "__wm",
                         ddl.EPOCH_MS)
    assert "COALESCE(TO_TIMESTAMP_LTZ(`__wm`, 3), TO_TIMESTAMP_LTZ(0, 3))" in ltz.column_ddl()
    assert ltz.functions() == []
    assert "`__wm` BIGINT" in carried.column_ddl(with_watermark=False)
    # Outputs recorded before the format existed keep their timestamp column.
    old = {"columns": [["id", "BIGINT"], ["ts", "TIMESTAMP(3)"]], "time_column": "ts",
           "watermark_column": "__wm"}
    assert "`__wm` TIMESTAMP(3)" in ddl.TableShape.from_dict(old).column_ddl()


def _topic(tmp_path: Path, segments_per_partition: int, partitions: int = 2) -> LocalTopic:
    topic = LocalTopic(tmp_path / "t", partitions, [("id", "BIGINT"), ("ts", "TIMESTAMP(3)")],
                       "ts").create()
    n = 0
    for k in range(partitions):
        for _ in range(segments_per_partition):
            topic.append(k, [{"id": n + i, "ts": "2025-01-01 00:00:00.000"} for i in range(3)])
            n += 3
    return topic


def _options(statement: str) -> dict[str, str]:
    return dict(re.findall(r"'([^']+)' = '([^']*)'", statement))


@pytest.mark.parametrize("mode", ["live", "bounded"])
def test_topic_source_is_one_ordered_connector_table_and_a_view(tmp_path: Path,
                                                                mode: str) -> None:
    topic = _topic(tmp_path, 3)
    plan = ddl.topic_source("clicks", topic.path, SHAPE, mode=mode, monitor_interval="200 ms")
    create, view = plan.statements
    assert create.startswith("CREATE TEMPORARY TABLE `__clicks_src`")
    assert "WATERMARK FOR `ts` AS `ts` - INTERVAL '5' SECOND" in create
    assert _options(create) == {
        "connector": "ultron-topic", "path": str(topic.path.resolve()), "layout": "topic",
        "partitions": "2", "mode": mode, "poll-interval": "200 ms", "format": "json",
        "json.timestamp-format.standard": "SQL", "scan.watermark.emit.strategy": "on-event"}
    assert view == "CREATE TEMPORARY VIEW `clicks` AS\nSELECT `id`, `ts` FROM `__clicks_src`"
    assert not (tmp_path / "replay").exists()  # no copies of the backlog any more


def test_a_missing_topic_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a local topic"):
        ddl.topic_source("t", tmp_path / "nope", SHAPE, mode="live")


def test_part_files_are_ordered_by_counter_per_subtask(tmp_path: Path) -> None:
    out = ddl.output_folder(tmp_path / "inst")
    out.mkdir(parents=True)
    for subtask, counter in [(0, 10), (0, 2), (1, 0), (0, 0)]:
        (out / f"part-u1-{subtask}-{counter}").write_text("{}\n")
    (out / ".part-u1-0-11.inprogress.x").write_text("")
    files = ddl.part_files(out)
    assert [p.name for p in files[0]] == ["part-u1-0-0", "part-u1-0-2", "part-u1-0-10"]
    assert [p.name for p in files[1]] == ["part-u1-1-0"]


def test_output_source_reads_sink_subtasks_as_partitions_and_hides_wm(tmp_path: Path) -> None:
    shape = ddl.TableShape(SHAPE.columns, "ts", None, "__wm")
    plan = ddl.output_source("up", tmp_path / "inst", shape, 3, mode="live")
    create, view = plan.statements
    opts = _options(create)
    assert opts["layout"] == "sink" and opts["partitions"] == "3"
    assert opts["path"] == str(ddl.output_folder(tmp_path / "inst").resolve())
    assert "`__wm` TIMESTAMP(3)" in create and "COALESCE(`__wm`" in create
    assert view.endswith("SELECT `id`, `ts` FROM `__up_src`")  # __wm stays hidden
    # An epoch-ms output registers the function its watermark calls, first.
    shape = ddl.TableShape(SHAPE.columns, "ts", None, "__wm", ddl.EPOCH_MS)
    function, create, view = ddl.output_source("up", tmp_path / "inst", shape, 3,
                                               mode="live").statements
    assert function == ("CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS `ultron_ms_timestamp` "
                        "AS 'ultron.flink.topic.MillisTimestamp' LANGUAGE JAVA")
    assert "`ultron_ms_timestamp`(`__wm`)" in create


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
