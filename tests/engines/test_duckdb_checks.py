"""Quick checks on real DuckDB: order, leakage, replay-vs-live, version consistency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ultron_nb.engines.duckdb.checks import (
    check_consistency,
    check_leakage,
    check_order,
    check_version_consistency,
)
from ultron_nb.engines.duckdb.features import DuckDBFeatureStore
from ultron_nb.engines.duckdb.prepare import prepare_topic
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.errors import ConfigError, DataError


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


# ----------------------------------------------------------------------------- order
def test_prepared_topic_is_in_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "hist" / "date=2024-03-01" / "hour=00"
    folder.mkdir(parents=True)
    frame = pd.DataFrame({"k": [f"u{i}" for i in rng.integers(0, 9, 300)],
                          "ts": ts("2024-03-01") + pd.to_timedelta(rng.integers(0, 3_600_000,
                                                                                  300), "ms")})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "a.parquet")
    out = tmp_path / "topic"
    prepare_topic(tmp_path / "hist", key="k", time="ts", partitions=3, start="2024-03-01",
                  end="2024-03-01 01:00", out=out)
    result = check_order(out)
    assert result.ok and result.problems.empty
    assert result.summary.iloc[0]["rows"] == 300
    assert list(result.details["partition"]) == [0, 1, 2]


def test_disorder_is_located_by_partition_offset_segment_and_line(tmp_path: Path) -> None:
    topic = LocalTopic(tmp_path / "t", partitions=2, columns=[("k", "STRING"),
                                                              ("ts", "TIMESTAMP(3)")],
                       time_column="ts").create()
    topic.append(0, [{"k": "a", "ts": "2024-03-01 00:00:01.000"},
                     {"k": "a", "ts": "2024-03-01 00:00:02.000"}])
    topic.append(0, [{"k": "a", "ts": "2024-03-01 00:00:03.000"},
                     {"k": "a", "ts": "2024-03-01 00:00:01.500"},  # offset 3: goes back
                     {"k": "a", "ts": "2024-03-01 00:00:04.000"}])
    topic.append(1, [{"k": "b", "ts": "2024-03-01 00:00:05.000"}])
    topic.append(1, [{"k": "b", "ts": "2024-03-01 00:00:04.999"}])  # crosses a segment
    result = check_order(tmp_path / "t")
    assert not result.ok
    rows = result.problems.to_dict("records")
    assert [(r["partition"], r["offset"], Path(r["file"]).name, r["line"]) for r in rows] == [
        (0, 3, "seg-00000001.jsonl", 2), (1, 1, "seg-00000001.jsonl", 1)]
    assert (rows[0]["previous_time"], rows[0]["time"]) == ("2024-03-01 00:00:03.000",
                                                           "2024-03-01 00:00:01.500")
    assert result.summary.iloc[0]["out_of_order"] == 2
    assert list(result.details["out_of_order"]) == [1, 1]


def test_order_of_a_dataframe_by_partition_column() -> None:
    frame = pd.DataFrame({"p": [0, 1, 0, 1, 0],
                          "t": pd.to_datetime(["2024-03-01 00:00:01", "2024-03-01 00:00:09",
                                               "2024-03-01 00:00:02", "2024-03-01 00:00:03",
                                               "2024-03-01 00:00:02"])})
    result = check_order(frame, time="t", partition="p")
    assert [(r["partition"], r["offset"]) for r in result.problems.to_dict("records")] == [
        (1, 1)]
    assert check_order(frame.iloc[[0, 2, 4]], time="t").ok


def test_order_of_files_and_unparseable_times(tmp_path: Path) -> None:
    good = tmp_path / "a.jsonl"
    good.write_text('{"t": "2024-03-01 00:00:01"}\n{"t": "2024-03-01 00:00:02"}\n')
    assert check_order(str(tmp_path / "*.jsonl"), time="t").ok
    (tmp_path / "b.jsonl").write_text('{"t": "2024-03-01 00:00:01"}\n{"t": "soon"}\n')
    with pytest.raises(DataError, match=r"b.jsonl: 1 value\(s\) of column 't'.*line 2"):
        check_order(str(tmp_path / "*.jsonl"), time="t")
    with pytest.raises(ConfigError, match="time"):
        check_order(str(good))


def test_null_times_break_the_order(tmp_path: Path) -> None:
    frame = pd.DataFrame({"t": pd.to_datetime(["2024-03-01", None, "2024-03-02"])})
    result = check_order(frame, time="t")
    assert not result.ok
    assert result.problems.iloc[0]["kind"] == "null_time"
    assert result.problems.iloc[0]["offset"] == 1


# ----------------------------------------------------------------------------- leakage
def test_leakage_counts_and_examples() -> None:
    samples = pd.DataFrame({
        "user": ["a", "b", "c", "d"],
        "ts": pd.to_datetime(["2024-03-01 10:00"] * 4),
        "f__version_time": pd.to_datetime(["2024-03-01 09:00", "2024-03-01 10:00",
                                           "2024-03-01 10:05", None]),
        "g__version_time": pd.to_datetime(["2024-03-01 11:00", None, None, None]),
    })
    result = check_leakage(samples, ["f__version_time", "g__version_time"], "ts", key="user")
    assert not result.ok
    summary = result.summary.iloc[0]
    assert (summary["rows"], summary["leaks"]) == (4, 2)
    assert (summary["f__version_time_leaks"], summary["g__version_time_leaks"]) == (1, 1)
    assert summary["f__version_time_with_version"] == 3
    rows = result.problems.to_dict("records")
    assert [(r["feature_column"], r["user"], r["lead"]) for r in rows] == [
        ("f__version_time", "c", "0:05:00"), ("g__version_time", "a", "1:00:00")]
    clean = check_leakage(samples.iloc[:2], "f__version_time", "ts")
    assert clean.ok and clean.problems.empty


# ----------------------------------------------------------------------------- consistency
def windows(n: int = 6, start: str = "2024-03-01 00:00") -> pd.DataFrame:
    return pd.DataFrame({
        "item": [f"i{i % 2}" for i in range(n)],
        "window_end": pd.date_range(start, periods=n, freq="1min"),
        "clicks": list(range(n)),
        "ctr": [0.1 * i for i in range(n)],
    })


def test_consistency_equal_over_the_overlap() -> None:
    live = windows(6)
    replayed = pd.concat([windows(3, "2023-12-31 23:57"), windows(6)]).reset_index(drop=True)
    result = check_consistency(replayed, live, key="item", time="window_end")
    assert result.ok, result.problems
    summary = result.summary.iloc[0]
    assert (summary["equal"], summary["replayed_rows"], summary["live_rows"]) == (6, 6, 6)
    assert summary["window_start"] == "2024-03-01 00:00:00.000"


def test_consistency_reports_missing_and_differing_rows(tmp_path: Path) -> None:
    live = windows(6)
    replayed = windows(6)
    replayed = replayed.drop(index=2)  # missing in replay
    replayed.loc[4, "clicks"] = 99  # differing value
    replayed.loc[5, "ctr"] = 0.5000001  # within tolerance
    extra = pd.DataFrame({"item": ["zz"], "window_end": [ts("2024-03-01 00:03")],
                          "clicks": [1], "ctr": [0.0]})
    replayed = pd.concat([replayed, extra])
    path = tmp_path / "replayed.parquet"
    replayed.to_parquet(path)
    result = check_consistency(str(path), live, key="item", time="window_end",
                               tolerance=1e-3)
    summary = result.summary.iloc[0]
    assert (summary["equal"], summary["value_mismatch"], summary["missing_in_live"],
            summary["missing_in_replay"]) == (4, 1, 1, 1)
    got = {(r["kind"], r["key"], r["time"], r["column"]) for r in
           result.problems.to_dict("records")}
    assert got == {
        ("missing_in_replay", "item='i0'", "2024-03-01 00:02:00.000", None),
        ("missing_in_live", "item='zz'", "2024-03-01 00:03:00.000", None),
        ("value_mismatch", "item='i0'", "2024-03-01 00:04:00.000", "clicks"),
    }
    mismatch = result.problems[result.problems["kind"] == "value_mismatch"].iloc[0]
    assert (mismatch["replayed"], mismatch["live"]) == (99, 4)
    strict = check_consistency(str(path), live, key="item", time="window_end")
    assert strict.summary.iloc[0]["value_mismatch"] == 2


def test_consistency_of_a_replayed_topic_against_live_rows(tmp_path: Path) -> None:
    topic = LocalTopic(tmp_path / "out", partitions=1, columns=[
        ("item", "STRING"), ("window_end", "TIMESTAMP(3)"), ("clicks", "BIGINT")],
        time_column="window_end").create()
    topic.append(0, [{"item": "i0", "window_end": "2024-03-01 00:01:00.000", "clicks": 3},
                     {"item": "i1", "window_end": "2024-03-01 00:02:00.000", "clicks": 4}])
    live = pd.DataFrame({"item": ["i0", "i1"], "window_end": pd.to_datetime(
        ["2024-03-01 00:01:00", "2024-03-01 00:02:00"]), "clicks": [3, 4]})
    assert check_consistency(tmp_path / "out", live, key="item", time="window_end").ok


def test_consistency_duplicates_and_no_overlap() -> None:
    live = windows(4)
    dup = pd.concat([windows(4), windows(4).iloc[[1]]])
    result = check_consistency(dup, live, key="item", time="window_end")
    assert result.summary.iloc[0]["duplicate_keys"] == 1
    assert "duplicate_key" in set(result.problems["kind"])
    later = windows(3, "2024-03-02 00:00")
    none = check_consistency(later, live, key="item", time="window_end")
    assert not none.ok and none.problems.iloc[0]["kind"] == "no_overlap"


def test_consistency_window_given_explicitly() -> None:
    live = windows(6)
    replayed = windows(6)
    replayed.loc[5, "clicks"] = -1
    result = check_consistency(replayed, live, key="item", time="window_end",
                               window=("2024-03-01 00:00", "2024-03-01 00:04"))
    assert result.ok and result.summary.iloc[0]["equal"] == 5


# ----------------------------------------------------------------------------- versions
@pytest.fixture
def feature_output() -> pd.DataFrame:
    return pd.DataFrame({
        "user": ["a", "a", "a", "b"],
        "version_time": pd.to_datetime(["2024-03-01 01:00", "2024-03-01 02:00",
                                        "2024-03-01 03:00", "2024-03-01 01:00"]),
        "ctr": [0.1, 0.2, 0.3, 0.9],
    })


def test_samples_made_with_as_of_are_version_consistent(tmp_path: Path, feature_output
                                                        ) -> None:
    samples = pd.DataFrame({"user": ["a", "a", "b", "c", "a"],
                            "ts": pd.to_datetime(["2024-03-01 01:30", "2024-03-01 02:00",
                                                  "2024-03-01 05:00", "2024-03-01 05:00",
                                                  "2024-03-01 00:10"])})
    with DuckDBFeatureStore(tmp_path / "features") as store:
        store.write("stats", feature_output, "user", "version_time")
        joined = store.as_of("stats", samples, "user", "ts")
    result = check_version_consistency(feature_output, joined, key="user", sample_time="ts",
                                       version="stats__version_time")
    assert result.ok, result.problems
    assert result.summary.iloc[0]["with_version"] == 3
    assert check_leakage(joined, "stats__version_time", "ts").ok


def test_version_problems_are_each_reported(feature_output) -> None:
    samples = pd.DataFrame({
        "user": ["a", "a", "a", "a", "b", "a"],
        "ts": pd.to_datetime(["2024-03-01 01:30", "2024-03-01 02:30", "2024-03-01 02:30",
                              "2024-03-01 02:30", "2024-03-01 04:00", "2024-03-01 04:00"]),
        "version": pd.to_datetime(["2024-03-01 01:00", "2024-03-01 02:00",
                                   "2024-03-01 01:30", "2024-03-01 03:00", None,
                                   "2024-03-01 02:00"]),
        "ctr": [0.1, 0.25, None, 0.3, None, 0.2],
    })
    result = check_version_consistency(feature_output, samples, key="user", sample_time="ts",
                                       version="version")
    summary = result.summary.iloc[0]
    assert (summary["value_mismatch"], summary["unknown_version"], summary["future_version"],
            summary["missing_version"], summary["stale_version"]) == (1, 1, 1, 1, 1)
    by_kind = {r["kind"]: r for r in result.problems.to_dict("records")}
    assert by_kind["value_mismatch"]["column"] == "ctr"
    assert "the sample read 0.25, the feature output has 0.2" in by_kind["value_mismatch"][
        "detail"]
    assert by_kind["unknown_version"]["version"] == "2024-03-01 01:30:00.000"
    assert by_kind["future_version"]["sample_time"] == "2024-03-01 02:30:00.000"
    assert "2024-03-01 01:00:00.000 was valid" in by_kind["missing_version"]["detail"]
    assert "but 2024-03-01 03:00:00.000 was valid" in by_kind["stale_version"]["detail"]
    relaxed = check_version_consistency(feature_output, samples, key="user", sample_time="ts",
                                        version="version", latest=False)
    assert relaxed.summary.iloc[0]["stale_version"] == 0


def test_duplicate_versions_in_the_feature_output(feature_output) -> None:
    doubled = pd.concat([feature_output, feature_output.iloc[[0]]])
    samples = pd.DataFrame({"user": ["a"], "ts": pd.to_datetime(["2024-03-01 01:30"]),
                            "version": pd.to_datetime(["2024-03-01 01:00"]), "ctr": [0.1]})
    result = check_version_consistency(doubled, samples, key="user", sample_time="ts",
                                       version="version")
    assert result.summary.iloc[0]["duplicate_version"] == 1
    assert result.problems.iloc[0]["kind"] == "duplicate_version"
