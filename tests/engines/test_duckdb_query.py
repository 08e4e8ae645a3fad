"""A DuckDB node's query on real DuckDB: inputs as views, bound parameters, atomic output."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from ultron_nb.engines.duckdb.query import (
    TableFiles,
    bound_parameters,
    check_query,
    flink_type,
    read_table,
    run_query,
)
from ultron_nb.errors import DataError, SqlError


def _jsonl(path: Path, rows: list[dict[str, object]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def clicks(tmp_path: Path) -> TableFiles:
    """Two JSON-lines segments, with a hidden watermark key the reader must ignore."""
    a = _jsonl(tmp_path / "p0000" / "seg-00000000.jsonl", [
        {"item": "a", "label": 1, "ts": "2025-01-01 00:00:01", "__wm": "x"},
        {"item": "b", "label": 0, "ts": "2025-01-01 00:59:59.5", "__wm": "x"}])
    b = _jsonl(tmp_path / "p0001" / "seg-00000000.jsonl", [
        {"item": "a", "label": 0, "ts": "2025-01-01 01:00:00", "__wm": "x"},
        {"item": "a", "label": 1, "ts": "2025-01-01 01:30:00", "__wm": "x"}])
    return TableFiles("clicks", (a, b), "json",
                      (("item", "VARCHAR"), ("label", "INTEGER"), ("ts", "TIMESTAMP")))


def test_query_over_json_inputs_writes_parquet_with_its_columns(
        tmp_path: Path, clicks: TableFiles) -> None:
    out = tmp_path / "out" / "data.parquet"
    result = run_query("SELECT item, COUNT(*) AS n, AVG(label) AS ctr FROM clicks "
                       "GROUP BY item ORDER BY item", [clicks], output=out, what="node 'ctr'")
    assert result.rows == 2 and result.path == out
    assert result.columns == [("item", "VARCHAR"), ("n", "BIGINT"), ("ctr", "DOUBLE")]
    frame = pd.read_parquet(out)
    assert frame.to_dict("records") == [{"item": "a", "n": 3, "ctr": 2 / 3},
                                        {"item": "b", "n": 1, "ctr": 0.0}]
    assert sorted(p.name for p in out.parent.iterdir()) == ["data.parquet"]  # no temp left


def test_window_bounds_and_parameters_are_bound_not_pasted(
        tmp_path: Path, clicks: TableFiles) -> None:
    sql = ("SELECT item, ts FROM clicks WHERE ts >= $window_start AND ts < $window_end "
           "AND item <> $skip ORDER BY ts")
    values = {"window_start": datetime(2025, 1, 1, 0), "window_end": datetime(2025, 1, 1, 1),
              "skip": "a' OR item = 'zzz", "unused": "x"}
    assert sorted(bound_parameters(sql, values, what="q")) == ["skip", "window_end",
                                                              "window_start"]
    out = tmp_path / "w.jsonl"
    result = run_query(sql, [clicks], output=out, fmt="json", values=values)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    # The quote stays inside the value: pasted into the text it would have dropped 'a'.
    assert result.rows == 2 and [r["item"] for r in rows] == ["a", "b"]
    assert rows[1]["ts"].startswith("2025-01-01 00:59:59.5")


def test_a_missing_parameter_names_the_node_and_the_parameter(clicks: TableFiles,
                                                              tmp_path: Path) -> None:
    with pytest.raises(SqlError, match=r"node 'h': no value for \$window_end \(known: "
                                       r"\$window_start\)"):
        run_query("SELECT * FROM clicks WHERE ts < $window_end", [clicks],
                  output=tmp_path / "x.parquet", values={"window_start": 1}, what="node 'h'")
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("sql, message", [
    ("SELECT 1; SELECT 2", "expected one SELECT, found 2 statements"),
    ("DROP TABLE clicks", "expected a SELECT query, not DROP"),
    ("COPY clicks TO '/tmp/x.csv'", "expected a SELECT query, not COPY"),
    ("SELEC item FROM clicks", "syntax error"),
])
def test_only_one_query_is_accepted(sql: str, message: str) -> None:
    with pytest.raises(SqlError, match=f"node 'n': .*{message}"):
        check_query(sql, what="node 'n'")


def test_planner_errors_are_one_line_naming_the_node(tmp_path: Path,
                                                     clicks: TableFiles) -> None:
    with pytest.raises(SqlError) as info:
        run_query("SELECT nope FROM clicks", [clicks], output=tmp_path / "x.parquet",
                  what="duckdb node 'ctr'")
    text = str(info.value)
    assert text.startswith("duckdb node 'ctr': ") and "nope" in text and "\n" not in text


def test_an_input_without_files_is_empty_with_its_columns_or_an_error(tmp_path: Path) -> None:
    empty = TableFiles("later", (), "json", (("k", "VARCHAR"), ("v", "BIGINT")))
    result = run_query("SELECT k, SUM(v) AS s FROM later GROUP BY k", [empty],
                       output=tmp_path / "e.parquet")
    assert result.rows == 0 and result.columns == [("k", "VARCHAR"), ("s", "HUGEINT")]
    with pytest.raises(DataError, match="table 'unknown' has no data yet"):
        run_query("SELECT * FROM unknown", [TableFiles("unknown", (), "parquet")],
                  output=tmp_path / "u.parquet")


def test_a_rerun_replaces_the_output_and_read_rows_returns_the_last(
        tmp_path: Path, clicks: TableFiles) -> None:
    out = tmp_path / "data.parquet"
    run_query("SELECT item FROM clicks", [clicks], output=out)
    run_query("SELECT item, label FROM clicks ORDER BY ts", [clicks], output=out)
    frame = read_table(TableFiles("out", (str(out),), "parquet"), limit=2)
    assert list(frame.columns) == ["item", "label"] and list(frame.label) == [0, 1]


def test_duckdb_types_map_to_flink_types() -> None:
    assert [flink_type(t) for t in ("VARCHAR", "BIGINT", "INTEGER", "DOUBLE", "TIMESTAMP",
                                    "DECIMAL(18,3)", "TIMESTAMP WITH TIME ZONE", "BLOB")] == [
        "STRING", "BIGINT", "INT", "DOUBLE", "TIMESTAMP(3)", "DECIMAL(18,3)",
        "TIMESTAMP_LTZ(3)", "STRING"]
