"""Bad-input detection on real DuckDB: every problem is reported by file and column."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ultron_nb.engines.duckdb.connection import connect
from ultron_nb.engines.duckdb.prepare import prepare_topic
from ultron_nb.engines.duckdb.sources import inspect_source
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.errors import ConfigError, DataError

DAY = "2024-03-01"


def hour_dir(root: Path, hour: int) -> Path:
    folder = root / f"date={DAY}" / f"hour={hour:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def parquet(root: Path, hour: int, frame: pd.DataFrame | pa.Table, name: str = "part-0"
            ) -> str:
    path = hour_dir(root, hour) / f"{name}.parquet"
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(
        frame, preserve_index=False)
    pq.write_table(table, path)
    return str(path)


def jsonl(root: Path, hour: int, rows: list[dict], name: str = "part-0") -> str:
    path = hour_dir(root, hour) / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def rows_at(hour: int, n: int = 4, key: str = "k") -> pd.DataFrame:
    ts = pd.Timestamp(DAY) + pd.Timedelta(hours=hour) + pd.to_timedelta(
        [(n - i) * 60 for i in range(n)], unit="s")
    return pd.DataFrame({key: [f"u{i % 3}" for i in range(n)], "ts": ts.astype(
        "datetime64[us]"), "v": [float(i) for i in range(n)]})


def inspect(root: Path, hours: int, **kw):
    con = connect()
    try:
        end = pd.Timestamp(DAY) + pd.Timedelta(hours=hours)
        return inspect_source(con, root, key=kw.pop("key", ("k",)), time=kw.pop("time", "ts"),
                              start=DAY, end=end, **kw)
    finally:
        con.close()


def kinds(plan) -> list[str]:
    return sorted(set(plan.report.problems["kind"]))


def only(plan, kind: str) -> pd.DataFrame:
    frame = plan.report.problems
    return frame[frame["kind"] == kind].reset_index(drop=True)


def test_clean_history_has_no_problems(tmp_path: Path) -> None:
    for h in range(3):
        parquet(tmp_path, h, rows_at(h))
    plan = inspect(tmp_path, 3)
    assert plan.report.ok and plan.report.problems.empty
    summary = plan.report.summary.iloc[0]
    assert (summary["files"], summary["rows"], summary["writable_rows"]) == (3, 12, 12)
    assert list(plan.report.details["time_classes"]) == ["timestamp:4"] * 3


def test_missing_hours_name_the_expected_directory(tmp_path: Path) -> None:
    parquet(tmp_path, 0, rows_at(0))
    parquet(tmp_path, 2, rows_at(2))
    plan = inspect(tmp_path, 4)
    missing = only(plan, "missing_partition")
    assert list(missing["file"]) == [f"{tmp_path}/date={DAY}/hour=01/",
                                     f"{tmp_path}/date={DAY}/hour=03/"]
    assert set(missing["severity"]) == {"error"}


def test_hidden_files_do_not_count_as_data(tmp_path: Path) -> None:
    parquet(tmp_path, 0, rows_at(0))
    (hour_dir(tmp_path, 1) / "_SUCCESS").write_text("")
    plan = inspect(tmp_path, 2)
    assert list(only(plan, "missing_partition")["file"]) == [f"{tmp_path}/date={DAY}/hour=01/"]


def test_empty_hours_are_reported(tmp_path: Path) -> None:
    parquet(tmp_path, 0, rows_at(0))
    parquet(tmp_path, 1, rows_at(1).iloc[:0])
    plan = inspect(tmp_path, 2)
    empty = only(plan, "empty_partition")
    assert list(empty["file"]) == [f"{tmp_path}/date={DAY}/hour=01/"]


def test_schema_drift_names_both_files_and_the_column(tmp_path: Path) -> None:
    first = parquet(tmp_path, 0, rows_at(0))
    second = parquet(tmp_path, 1, rows_at(1).assign(extra=1))
    third = parquet(tmp_path, 2, rows_at(2).assign(v=lambda f: f["v"].astype("int64")))
    plan = inspect(tmp_path, 3)
    drift = only(plan, "schema_drift")
    got = {(r.file, r.column): r.detail for r in drift.itertuples()}
    assert got[(second, "extra")] == f"column 'extra' (BIGINT) added after {first}"
    assert got[(third, "v")] == f"column 'v' changed type from DOUBLE (in {second}) to BIGINT"
    assert got[(third, "extra")] == f"column 'extra' (BIGINT) of {second} removed"
    assert len(drift) == 3


def test_missing_key_column_in_one_file(tmp_path: Path) -> None:
    parquet(tmp_path, 0, rows_at(0))
    renamed = parquet(tmp_path, 1, rows_at(1, key="user"))
    plan = inspect(tmp_path, 2)
    missing = only(plan, "missing_column")
    assert list(zip(missing["file"], missing["column"], strict=True)) == [(renamed, "k")]
    # Its rows have no key: counted as null keys of that file.
    nulls = only(plan, "null_key")
    assert list(zip(nulls["file"], nulls["rows"], strict=True)) == [(renamed, 4)]


def test_null_keys_are_counted_per_file(tmp_path: Path) -> None:
    parquet(tmp_path, 0, rows_at(0))
    frame = rows_at(1)
    frame.loc[[0, 3], "k"] = None
    bad = parquet(tmp_path, 1, frame)
    plan = inspect(tmp_path, 2)
    nulls = only(plan, "null_key")
    assert nulls.to_dict("records") == [{
        "kind": "null_key", "severity": "error", "detail": "2 row(s) with a NULL key",
        "file": bad, "column": "k", "rows": 2}]
    routed = inspect(tmp_path, 2, null_keys="route")
    assert routed.report.ok and set(only(routed, "null_key")["severity"]) == {"info"}


def test_null_keys_cannot_be_ignored(tmp_path: Path) -> None:
    parquet(tmp_path, 0, rows_at(0))
    with pytest.raises(ConfigError, match="never ignored"):
        inspect(tmp_path, 1, allow={"null_key"})


def epoch_frame(hour: int, scale: int, n: int = 3) -> pd.DataFrame:
    base = pd.Timestamp(DAY) + pd.Timedelta(hours=hour)
    secs = [int(base.timestamp()) + 10 * i for i in range(n)]
    return pd.DataFrame({"k": ["a"] * n, "ts": [s * scale for s in secs]})


def test_mixed_epoch_units_between_hours(tmp_path: Path) -> None:
    parquet(tmp_path, 0, epoch_frame(0, 1))
    parquet(tmp_path, 1, epoch_frame(1, 1))
    millis = parquet(tmp_path, 2, epoch_frame(2, 1000))
    plan = inspect(tmp_path, 3)
    mixed = only(plan, "mixed_time_units")
    assert list(zip(mixed["file"], mixed["column"], mixed["rows"], strict=True)) == [
        (millis, "ts", 3)]
    assert mixed["detail"][0] == ("3 value(s) are epoch milliseconds while most (6) are "
                                  "epoch seconds")


def test_mixed_epoch_units_inside_one_file(tmp_path: Path) -> None:
    frame = pd.concat([epoch_frame(0, 1000, 5), epoch_frame(0, 1_000_000, 2)])
    path = parquet(tmp_path, 0, frame)
    plan = inspect(tmp_path, 1)
    mixed = only(plan, "mixed_time_units")
    assert list(zip(mixed["file"], mixed["rows"], strict=True)) == [(path, 2)]
    assert "epoch microseconds while most (5) are epoch milliseconds" in mixed["detail"][0]


def test_strings_and_epochs_mixed_in_json(tmp_path: Path) -> None:
    jsonl(tmp_path, 0, [{"k": "a", "ts": "2024-03-01 00:00:01"},
                        {"k": "b", "ts": "2024-03-01 00:00:02.5"}])
    odd = jsonl(tmp_path, 1, [{"k": "a", "ts": 1709254800},
                              {"k": "a", "ts": "2024-03-01 01:00:05"}])
    plan = inspect(tmp_path, 2)
    mixed = only(plan, "mixed_time_units")
    assert list(zip(mixed["file"], mixed["rows"], strict=True)) == [(odd, 1)]
    assert "epoch seconds while most (3) are date-time strings" in mixed["detail"][0]


def test_mixed_time_zones(tmp_path: Path) -> None:
    jsonl(tmp_path, 0, [{"k": "a", "ts": "2024-03-01T00:00:01Z"},
                        {"k": "b", "ts": "2024-03-01T00:10:00+00:00"}])
    paris = jsonl(tmp_path, 1, [{"k": "a", "ts": "2024-03-01T02:00:01+01:00"}])
    naive = jsonl(tmp_path, 1, [{"k": "a", "ts": "2024-03-01 01:30:00"}], name="part-1")
    plan = inspect(tmp_path, 2)
    zones = only(plan, "mixed_time_zones")
    got = {(r.file, r.rows): r.detail for r in zones.itertuples()}
    assert got == {
        (paris, 1): "1 value(s) have offset +01:00 while most (2) have offset +00:00",
        (naive, 1): "1 value(s) have no time zone while most (2) have offset +00:00",
    }
    assert set(zones["column"]) == {"ts"}


def test_naive_and_zoned_parquet_timestamps(tmp_path: Path) -> None:
    parquet(tmp_path, 0, rows_at(0))
    aware = parquet(tmp_path, 1, rows_at(1).assign(ts=lambda f: f["ts"].dt.tz_localize("UTC")))
    plan = inspect(tmp_path, 2)
    zones = only(plan, "mixed_time_zones")
    assert list(zones["file"]) == [aware]
    drift = only(plan, "schema_drift")
    assert list(drift["column"]) == ["ts"]


def test_unparseable_and_null_times(tmp_path: Path) -> None:
    path = jsonl(tmp_path, 0, [{"k": "a", "ts": "2024-03-01 00:00:01"},
                               {"k": "b", "ts": "yesterday"}, {"k": "c", "ts": None},
                               {"k": "d", "ts": "2024-13-45 00:00:00"}])
    plan = inspect(tmp_path, 1)
    bad = only(plan, "bad_time")
    assert list(zip(bad["file"], bad["rows"], strict=True)) == [(path, 2)]
    assert "e.g. '2024-13-45 00:00:00'" in bad["detail"][0]
    null = only(plan, "null_time")
    assert list(zip(null["file"], null["rows"], strict=True)) == [(path, 1)]


def test_out_of_range_rows_are_information(tmp_path: Path) -> None:
    frame = rows_at(0)
    frame.loc[0, "ts"] = pd.Timestamp("2024-02-20")
    path = parquet(tmp_path, 0, frame)
    plan = inspect(tmp_path, 1)
    oor = only(plan, "out_of_range")
    assert list(zip(oor["file"], oor["rows"], oor["severity"], strict=True)) == [
        (path, 1, "info")]
    assert plan.report.ok


def test_allowed_problems_become_warnings_and_prepare_proceeds(tmp_path: Path) -> None:
    parquet(tmp_path, 0, rows_at(0))
    out = tmp_path / "topic"
    manifest = prepare_topic(tmp_path, key="k", time="ts", partitions=1, start=DAY,
                             end=f"{DAY} 02:00", out=out, allow={"missing_partition"})
    assert manifest.rows == 4
    assert len(manifest.warnings) == 1 and manifest.warnings[0].startswith(
        "missing_partition: no data file for 2024-03-01 hour 01")
    assert LocalTopic.open(out).extra["warnings"] == list(manifest.warnings)


def test_allowed_mixed_units_convert_each_value_by_its_unit(tmp_path: Path) -> None:
    parquet(tmp_path, 0, epoch_frame(0, 1))
    parquet(tmp_path, 1, epoch_frame(1, 1000))
    out = tmp_path / "topic"
    with pytest.raises(DataError, match="mixed_time_units"):
        prepare_topic(tmp_path, key="k", time="ts", partitions=1, start=DAY,
                      end=f"{DAY} 02:00", out=out)
    prepare_topic(tmp_path, key="k", time="ts", partitions=1, start=DAY, end=f"{DAY} 02:00",
                  out=out, allow={"mixed_time_units"})
    times = [r["ts"] for r in LocalTopic.open(out).read()]
    assert times == ["2024-03-01 00:00:00.000", "2024-03-01 00:00:10.000",
                     "2024-03-01 00:00:20.000", "2024-03-01 01:00:00.000",
                     "2024-03-01 01:00:10.000", "2024-03-01 01:00:20.000"]


def test_offset_strings_are_converted_to_utc(tmp_path: Path) -> None:
    jsonl(tmp_path, 0, [{"k": "a", "ts": "2024-03-01T01:30:00+01:00"},
                        {"k": "a", "ts": "2024-03-01T01:20:00+01:00"}])
    out = tmp_path / "topic"
    prepare_topic(tmp_path, key="k", time="ts", partitions=1, start=DAY, end=f"{DAY} 01:00",
                  out=out)
    assert [r["ts"] for r in LocalTopic.open(out).read()] == [
        "2024-03-01 00:20:00.000", "2024-03-01 00:30:00.000"]


def test_error_message_names_files_and_columns(tmp_path: Path) -> None:
    parquet(tmp_path, 0, rows_at(0))
    frame = rows_at(1)
    frame.loc[1, "k"] = None
    bad = parquet(tmp_path, 1, frame)
    with pytest.raises(DataError) as info:
        prepare_topic(tmp_path, key="k", time="ts", partitions=1, start=DAY,
                      end=f"{DAY} 02:00", out=tmp_path / "topic")
    assert f"file={bad}" in str(info.value) and "column=k" in str(info.value)


def test_unknown_allow_kind_is_refused(tmp_path: Path) -> None:
    parquet(tmp_path, 0, rows_at(0))
    with pytest.raises(ConfigError, match="unknown problem kind"):
        inspect(tmp_path, 1, allow={"typo"})
