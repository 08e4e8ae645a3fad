"""Appending your own rows to a local topic: API, %ultron append, ultron append, nodes paths."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from IPython.core.error import UsageError

from ultron_nb.engines.topics import LocalTopic
from ultron_nb.errors import ConfigError, DataError, FlowError, NotFoundError
from ultron_nb.flow.build import define_node

ORDERS = "order_id STRING, user_id STRING, amount DOUBLE, qty INT, ts TIMESTAMP(3)"


def _define(ws: Any, *, key: str | None = "user_id", partitions: int = 3) -> None:
    ws.define("shop", define_node("orders", ORDERS, kind="topic", time="ts", watermark="5 s",
                                  partitions=partitions, key=key))
    ws.define("shop", define_node("big", "SELECT * FROM orders WHERE amount > 100"))


def _frame(n: int, users: int = 17) -> pd.DataFrame:
    return pd.DataFrame({
        "order_id": [f"o{i:04d}" for i in range(n)],
        "user_id": [f"u{i % users:03d}" for i in range(n)],
        "amount": [round(1.5 * i, 2) for i in range(n)],
        "qty": [i % 5 for i in range(n)],
        # Not in time order: each segment is written in event-time order.
        "ts": [pd.Timestamp("2025-03-01") + pd.Timedelta(seconds=(i * 37) % n)
               for i in range(n)],
    })


def _segments(topic_dir: Path) -> dict[int, list[list[dict[str, Any]]]]:
    topic = LocalTopic.open(topic_dir)
    return {k: [[json.loads(x) for x in seg.read_text().splitlines()]
                for seg in topic.segments(k)] for k in range(topic.partitions)}


def test_rows_are_hashed_by_the_topic_key_as_backtrack_prepare_does(workspace: Any) -> None:
    ws = workspace
    _define(ws)
    frame = _frame(200)
    result = ws.append("orders", frame)
    topic_dir = ws.settings.home / "topics" / "orders"
    assert result.path == topic_dir and result.rows == 200
    segs = _segments(topic_dir)
    assert all(len(s) == 1 for s in segs.values())  # one new segment per partition
    where = {r["user_id"]: k for k, s in segs.items() for r in s[0]}
    assert len(where) == 17 and set(where.values()) == {0, 1, 2}
    # Every row of a key in the partition DuckDB's hash(key) % 3 names (independently here).
    expected = dict(duckdb.sql("SELECT u, CAST(hash(u) % 3 AS INTEGER) FROM "
                               "(SELECT DISTINCT user_id AS u FROM frame)").fetchall())
    assert where == expected
    rows = [r for s in segs.values() for r in s[0]]
    assert Counter(r["order_id"] for r in rows) == Counter(frame.order_id)
    for s in segs.values():
        times = [r["ts"] for r in s[0]]
        assert times == sorted(times)  # each segment in event-time order
    first = next(r for r in rows if r["order_id"] == "o0003")
    assert first == {"order_id": "o0003", "user_id": "u003", "amount": 4.5, "qty": 3,
                     "ts": "2025-03-01 00:01:51.000"}
    # A second append adds the next segment of each partition.
    ws.append("orders", _frame(30))
    assert all(len(s) == 2 for s in _segments(topic_dir).values())
    assert "appended 30 rows to topic orders" in str(ws.append("orders", _frame(30)))


def test_without_a_key_rows_go_round_robin_or_to_one_partition(workspace: Any) -> None:
    ws = workspace
    _define(ws, key=None)
    ws.append("orders", _frame(10))
    segs = _segments(ws.settings.home / "topics" / "orders")
    assert [len(s[0]) for s in segs.values()] == [4, 3, 3]
    ws.append("orders", _frame(1))  # starts at the partition with the fewest segments
    assert [len(s) for s in _segments(ws.settings.home / "topics" / "orders").values()] == \
        [2, 1, 1]
    result = ws.append("orders", _frame(5), partition=2)
    assert [(k, n) for k, _, n in result.segments] == [(2, 5)]
    with pytest.raises(ConfigError, match=r"--partition 3: topic orders has partitions 0\.\.2"):
        ws.append("orders", _frame(5), partition=3)
    by_qty = ws.append("orders", _frame(20), partition_by="qty")
    assert by_qty.rows == 20


def test_a_column_mismatch_is_one_line_naming_the_column_and_writes_nothing(
    workspace: Any,
) -> None:
    ws = workspace
    _define(ws)
    topic_dir = ws.settings.home / "topics" / "orders"
    with pytest.raises(DataError, match=r"column 'qty' of topic orders is missing") as err:
        ws.append("orders", _frame(5).drop(columns=["qty"]))
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"column 'coupon' is not a column of topic orders"):
        ws.append("orders", _frame(5).assign(coupon="x"))
    with pytest.raises(DataError, match=r"column 'ts' has values that are not timestamps "
                                        r"\(first: 'yesterday'\)"):
        ws.append("orders", _frame(3).assign(ts=["2025-03-01 00:00:01", "yesterday", None]))
    with pytest.raises(DataError, match=r"column 'qty' has values that are not integers"):
        ws.append("orders", _frame(3).assign(qty=[1, 2.5, 3]))
    with pytest.raises(DataError, match=r"time column 'ts' is empty in 1 rows"):
        ws.append("orders", _frame(3).assign(ts=["2025-03-01 00:00:01", None, "2025-03-01"]))
    assert all(not s for s in _segments(topic_dir).values())


def test_csv_parquet_and_json_lines_files(workspace: Any, tmp_path: Path) -> None:
    ws = workspace
    _define(ws)
    csv = tmp_path / "orders.csv"
    csv.write_text("order_id,user_id,amount,qty,ts\n"
                   "007,u1,10.5,2,2025-03-01T00:00:05Z\n"
                   "008,u1,,3,2025-03-01 00:00:04.250\n")
    assert ws.append("orders", csv).rows == 2
    parquet = tmp_path / "orders.parquet"
    frame = _frame(4)
    frame["ts"] = frame.ts.dt.tz_localize("Europe/Paris")  # converted to naive UTC
    frame.to_parquet(parquet)
    assert ws.append("orders", parquet).rows == 4
    jsonl = tmp_path / "orders.jsonl"
    jsonl.write_text(json.dumps({"order_id": "j1", "user_id": "u9", "amount": 1, "qty": 1,
                                 "ts": 1740787200000}) + "\n")  # epoch milliseconds
    assert ws.append("orders", jsonl).rows == 1
    rows = {r["order_id"]: r for s in _segments(ws.settings.home / "topics" / "orders").values()
            for seg in s for r in seg}
    assert rows["007"] == {"order_id": "007", "user_id": "u1", "amount": 10.5, "qty": 2,
                           "ts": "2025-03-01 00:00:05.000"}  # leading zeros kept
    assert rows["008"]["amount"] is None and rows["008"]["ts"] == "2025-03-01 00:00:04.250"
    assert rows["o0000"]["ts"] == "2025-02-28 23:00:00.000"
    assert rows["j1"]["ts"] == "2025-03-01 00:00:00.000"
    with pytest.raises(DataError, match=r"orders\.txt: unknown file type '\.txt'"):
        (tmp_path / "orders.txt").write_text("x")
        ws.append("orders", tmp_path / "orders.txt")
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        ws.append("orders", tmp_path / "nope.csv")


def test_what_append_refuses(workspace: Any) -> None:
    ws = workspace
    _define(ws)
    with pytest.raises(NotFoundError, match="no topic 'clicks' in any flow"):
        ws.append("clicks", _frame(1))
    with pytest.raises(FlowError, match="'big' is a flink stream, not a local topic"):
        ws.append("big", _frame(1))
    ws.define("other", define_node("orders", ORDERS, kind="topic", time="ts",
                                   path="elsewhere/orders"))
    with pytest.raises(ConfigError, match="defined in flows other, shop at different paths"):
        ws.append("orders", _frame(1))
    assert ws.append("orders", _frame(2), flow="other").path == \
        (ws.settings.home.parent / "elsewhere" / "orders").resolve()
    # A topic directory works without a flow (hashed by the key its manifest records, if any).
    ws.append("orders", _frame(2), flow="shop")
    folder = ws.settings.home / "topics" / "orders"
    result = ws.append(folder, _frame(3))
    assert result.path == folder and result.rows == 3


def test_the_magic_takes_a_notebook_frame_and_nodes_shows_topic_paths(cell: Any, ip: Any,
                                                                       workdir: Path) -> None:
    cell("%ultron flow shop")
    cell("%%ultron node orders --kind topic --time ts --partitions 2 --key user_id\n" + ORDERS)
    ip.user_ns["df"] = _frame(12)
    result = cell("%ultron append orders --frame df")
    assert result.rows == 12 and {k for k, _, _ in result.segments} == {0, 1}
    assert "<table>" in result._repr_html_()
    table = cell("%ultron nodes")
    assert table.columns[-1] == "path"
    assert table.rows[0][-1] == str(workdir / ".ultron" / "topics" / "orders")
    with pytest.raises(UsageError, match="no variable 'nope' in the notebook"):
        cell("%ultron append orders --frame nope")
    ip.user_ns["x"] = 3
    with pytest.raises(UsageError, match="'x' is a int, not a pandas DataFrame"):
        cell("%ultron append orders --frame x")
    with pytest.raises(UsageError, match="append needs one of --file F or --frame VAR"):
        cell("%ultron append orders")


def test_the_cli_appends_a_file(workdir: Path) -> None:
    ultron = Path(sys.executable).parent / "ultron"

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ultron), *args], cwd=workdir, input=stdin,
                              capture_output=True, text=True, timeout=120)

    r = run("node", "orders", "--flow", "shop", "--kind", "topic", "--time", "ts",
            "--partitions", "2",
            stdin=ORDERS)
    assert r.returncode == 0, r.stderr
    _frame(6).to_csv(workdir / "o.csv", index=False)
    r = run("append", "orders", "--file", "o.csv", "--flow", "shop")
    assert r.returncode == 0, r.stderr
    assert "appended 6 rows to topic orders" in r.stdout and "seg-00000000.jsonl" in r.stdout
    r = run("append", "orders", "--file", "o.csv", "--partition", "1")
    assert r.returncode == 0 and "p0001" in r.stdout
    (workdir / "bad.csv").write_text("order_id,ts\n1,2025-03-01\n")
    r = run("append", "orders", "--file", "bad.csv")
    assert r.returncode == 2
    assert r.stderr.strip() == ("DataError: append orders from bad.csv: column 'user_id' of "
                                "topic orders is missing (the data has order_id, ts)")
    r = run("nodes", "shop")
    assert str(workdir / ".ultron" / "topics" / "orders") in r.stdout
