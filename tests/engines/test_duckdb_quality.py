"""Rules measured by DuckDB on a window of an output's files: each injected fault caught in
its window and only there; clean windows pass; bad rules are one line naming node and rule."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ultron_nb.engines.duckdb.quality import evaluate, freshness_lag
from ultron_nb.engines.duckdb.query import TableFiles
from ultron_nb.errors import DataError
from ultron_nb.flow.quality import parse_rules

T0 = datetime(2025, 6, 1)
MINUTE = 60_000
T0_MS = int((T0 - datetime(1970, 1, 1)).total_seconds() * 1000)
RULES = parse_rules("readings", """
rows between 100 and 1000
null_rate(temp) <= 0.05
unique(reading_id)
temp between -40 and 80
drift(temp) <= 0.5
check sensor LIKE 's%'
""")


def _minute(m: int, rng: random.Random, fault: str | None) -> list[dict[str, object]]:
    rows = []
    for i in range(300):
        temp: float | None = rng.gauss(20, 2)
        if fault == "nulls" and i % 3 == 0:
            temp = None
        if fault == "shift":
            temp = (temp or 0) + 15
        rows.append({"reading_id": f"r{m}-{i}", "sensor": f"s{i % 7}", "temp": temp,
                     "ts": str(T0 + timedelta(minutes=m, seconds=i / 5))})
    if fault == "dupes":
        rows += [dict(r) for r in rows[:4]]
    if fault == "range":
        rows[7]["temp"] = 999.0
        rows[8]["sensor"] = "bad"
    return rows


@pytest.fixture
def table(tmp_path: Path) -> TableFiles:
    rng = random.Random(3)
    faults = {2: "nulls", 3: "dupes", 4: "shift", 5: "range"}
    files = []
    for part in range(2):  # two files, the minutes spread over both (as subtasks write)
        path = tmp_path / f"part-{part}.json"
        with path.open("w") as f:
            for m in range(7):
                for row in _minute(m, rng, faults.get(m))[part::2]:
                    f.write(json.dumps({**row, "__wm": 0}) + "\n")
        files.append(str(path))
    return TableFiles("readings", tuple(files), "json",
                      (("reading_id", "VARCHAR"), ("sensor", "VARCHAR"), ("temp", "DOUBLE"),
                       ("ts", "TIMESTAMP")))


def test_each_fault_fails_its_rule_in_its_window_only(table: TableFiles) -> None:
    refs: dict[str, dict] = {}
    failed: dict[int, set[str]] = {}
    for m in range(7):
        measured = evaluate(RULES, table, time_column="ts", start_ms=T0_MS + m * MINUTE,
                            end_ms=T0_MS + (m + 1) * MINUTE, references=refs)
        for x in measured:
            if x.reference is not None:
                refs[x.rule] = x.reference
        failed[m] = {x.rule for x in measured if not x.ok}
        if m == 3:
            dupes = next(x for x in measured if x.rule == "unique_reading_id")
            assert dupes.value == 4 and dupes.rows == 304
            assert {s["reading_id"] for s in dupes.samples} == {f"r3-{i}" for i in range(4)}
        if m == 2:
            nulls = next(x for x in measured if x.rule == "nulls_temp")
            assert nulls.value == pytest.approx(100 / 300) and nulls.samples
            assert all(s["temp"] is None for s in nulls.samples)
    assert "drift_temp" in refs  # the first window is the reference
    assert failed == {0: set(), 1: set(), 2: {"nulls_temp"}, 3: {"unique_reading_id"},
                      4: {"drift_temp"}, 5: {"range_temp", "check"}, 6: set()}


def test_a_run_is_measured_whole_and_an_empty_window_has_no_rows(table: TableFiles) -> None:
    whole = {x.rule: x for x in evaluate(RULES, table)}
    assert whole["rows"].value == 7 * 300 + 4 and not whole["rows"].ok  # above 1000
    empty = {x.rule: x for x in evaluate(RULES, table, time_column="ts",
                                         start_ms=T0_MS - MINUTE, end_ms=T0_MS)}
    assert empty["rows"].value == 0 and not empty["rows"].ok
    assert empty["nulls_temp"].value == 0 and empty["nulls_temp"].ok


def test_a_rule_on_a_missing_column_or_bad_sql_names_node_and_rule(table: TableFiles) -> None:
    with pytest.raises(DataError, match="node 'readings': rule 'nulls_humidity' names column "
                                        "'humidity'"):
        evaluate(parse_rules("readings", "null_rate(humidity) <= 0.1"), table)
    with pytest.raises(DataError, match="node 'readings': rule 'check'"):
        evaluate(parse_rules("readings", "check tempp > 0"), table)


def test_freshness_is_the_watermark_lag_behind_the_wall_clock() -> None:
    assert freshness_lag(None, 100.0) is None
    assert freshness_lag(40_000, 100.0) == 60.0
    assert freshness_lag(200_000, 100.0) == 0.0
