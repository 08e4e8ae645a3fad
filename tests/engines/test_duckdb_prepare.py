"""prepare_topic on real DuckDB: ordering, partitioning, manifest, idempotency, atomicity."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ultron_nb.engines.duckdb.prepare import NULL_KEYS_FILE, prepare_topic, read_manifest
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]
TS_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")
START, END = "2024-03-01 00:00", "2024-03-01 03:00"


def write_hour(root: Path, hour: int, frames: list[pd.DataFrame], day: str = "2024-03-01",
               fmt: str = "parquet") -> list[Path]:
    """Write ``frames`` as the files of one hour partition (rows shuffled already)."""
    folder = root / f"date={day}" / f"hour={hour:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        if fmt == "parquet":
            path = folder / f"part-{i:05d}.parquet"
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
        else:
            path = folder / f"part-{i:05d}.jsonl"
            frame.to_json(path, orient="records", lines=True, date_format="iso")
        paths.append(path)
    return paths


def clicks(hour: int, n: int, seed: int, keys: int = 12, day: str = "2024-03-01"
           ) -> pd.DataFrame:
    """``n`` shuffled rows of one hour: user_id, ts (ms precision), item, score."""
    rng = np.random.default_rng(seed)
    base = pd.Timestamp(day) + pd.Timedelta(hours=hour)
    ts = base + pd.to_timedelta(rng.integers(0, 3_600_000, n), unit="ms")
    return pd.DataFrame({
        "user_id": [f"u{k:03d}" for k in rng.integers(0, keys, n)],
        "ts": ts.astype("datetime64[us]"),
        "item": rng.integers(0, 1000, n).astype("int64"),
        "score": rng.random(n),
    })


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """Three hours of clicks, two unordered Parquet files per hour."""
    root = tmp_path / "hist"
    frames = []
    for hour in range(3):
        parts = [clicks(hour, 70, seed=hour * 10 + i) for i in range(2)]
        write_hour(root, hour, parts)
        frames.extend(parts)
    return root, pd.concat(frames, ignore_index=True)


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def read_partitions(out: Path) -> list[list[dict]]:
    topic = LocalTopic.open(out)
    parts = []
    for k in range(topic.partitions):
        rows = []
        for seg in topic.segments(k):
            rows.extend(json.loads(line) for line in seg.read_text().splitlines())
        parts.append(rows)
    return parts


def test_partitions_are_ordered_hashed_and_complete(history, tmp_path: Path) -> None:
    root, expected = history
    out = tmp_path / "topic"
    manifest = prepare_topic(root, key="user_id", time="ts", partitions=4, start=START,
                             end=END, out=out)
    parts = read_partitions(out)
    assert len(parts) == 4
    assert sum(len(p) for p in parts) == len(expected) == manifest.rows == 420
    con = duckdb.connect()
    for k, rows in enumerate(parts):
        times = [r["ts"] for r in rows]
        assert all(TS_TEXT.match(t) for t in times)
        assert times == sorted(times), f"partition {k} is not ordered by event time"
        # Ties on time are broken by key.
        pairs = [(r["ts"], r["user_id"]) for r in rows]
        assert pairs == sorted(pairs)
        for user in {r["user_id"] for r in rows}:
            assert con.execute("SELECT hash(?) % 4", [user]).fetchone()[0] == k
        stats = manifest.partitions[k]
        assert stats.rows == len(rows)
        if rows:
            assert (stats.min_time, stats.max_time) == (times[0], times[-1])
            assert stats.segments == (f"p{k:04d}/seg-00000000.jsonl",)
            assert (out / f"p{k:04d}" / "seg-00000000.jsonl").is_file()
    # Every input row comes out once, with its values.
    got = pd.DataFrame([r for p in parts for r in p])
    want = expected.assign(ts=expected["ts"].dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3])
    cols = ["user_id", "ts", "item", "score"]
    pd.testing.assert_frame_equal(
        got[cols].sort_values(cols).reset_index(drop=True),
        want[cols].sort_values(cols).reset_index(drop=True))


def test_manifest_records_layout_sources_and_columns(history, tmp_path: Path) -> None:
    root, _ = history
    out = tmp_path / "topic"
    manifest = prepare_topic(root, key="user_id", time="ts", partitions=2, start=START,
                             end=END, out=out)
    topic = LocalTopic.open(out)
    assert topic.partitions == 2 and topic.time_column == "ts"
    assert topic.columns == [("user_id", "STRING"), ("ts", "TIMESTAMP(3)"),
                             ("item", "BIGINT"), ("score", "DOUBLE")]
    extra = topic.extra
    assert extra["key"] == ["user_id"] and extra["time"] == "ts"
    assert extra["from"] == "2024-03-01 00:00:00.000" and extra["to"] == "2024-03-01 03:00:00.000"
    assert extra["partitioner"] == "duckdb hash(user_id) % 2"
    assert extra["duckdb_version"] == duckdb.__version__
    assert [p["rows"] for p in extra["partition_stats"]] == manifest.counts
    files = extra["source_files"]
    assert len(files) == 6 and all(f["rows"] == 70 == f["written"] for f in files)
    assert [(f["date"], f["hour"]) for f in files] == [("2024-03-01", h) for h in (0, 0, 1, 1,
                                                                                   2, 2)]
    assert read_manifest(out) == manifest


def test_rerun_is_byte_identical_and_replaces_atomically(history, tmp_path: Path) -> None:
    root, _ = history
    out = tmp_path / "topic"
    prepare_topic(root, key="user_id", time="ts", partitions=3, start=START, end=END, out=out)
    first = tree_digest(out)
    prepare_topic(root, key="user_id", time="ts", partitions=3, start=START, end=END, out=out)
    assert tree_digest(out) == first
    # No temporary or old directories are left next to the topic.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hist", "topic"]


def test_output_is_identical_in_another_process(history, tmp_path: Path) -> None:
    root, _ = history
    here, there = tmp_path / "here", tmp_path / "there"
    prepare_topic(root, key="user_id", time="ts", partitions=5, start=START, end=END, out=here)
    code = (
        "from ultron_nb.engines.duckdb.prepare import prepare_topic;"
        f"prepare_topic({str(root)!r}, key='user_id', time='ts', partitions=5, "
        f"start={START!r}, end={END!r}, out={str(there)!r}, threads=1)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert tree_digest(here) == tree_digest(there)


def test_ties_break_by_key_then_input_position(tmp_path: Path) -> None:
    root = tmp_path / "hist"
    t = pd.Timestamp("2024-03-01 00:10:00")
    frame = pd.DataFrame({"user_id": ["b", "a", "b", "a"], "ts": [t] * 4,
                          "item": [3, 2, 1, 4]})
    write_hour(root, 0, [frame])
    out = tmp_path / "topic"
    prepare_topic(root, key="user_id", time="ts", partitions=1, start="2024-03-01",
                  end="2024-03-01 01:00", out=out)
    rows = read_partitions(out)[0]
    assert [(r["user_id"], r["item"]) for r in rows] == [("a", 2), ("a", 4), ("b", 3), ("b", 1)]


def test_compound_key_and_json_input(tmp_path: Path) -> None:
    root = tmp_path / "hist"
    frame = pd.DataFrame({
        "app": ["x", "y", "x", "y"],
        "user": [1, 1, 2, 2],
        "ts": ["2024-03-01T00:00:03.5Z", "2024-03-01T00:00:01Z", "2024-03-01T00:00:02.25Z",
               "2024-03-01T00:00:00Z"],
    })
    write_hour(root, 0, [frame.iloc[::-1]], fmt="json")
    out = tmp_path / "topic"
    manifest = prepare_topic(root, key=["app", "user"], time="ts", partitions=1,
                             start="2024-03-01", end="2024-03-01 01:00", out=out)
    assert manifest.fmt == "json" and manifest.key == ("app", "user")
    rows = read_partitions(out)[0]
    assert [r["ts"] for r in rows] == ["2024-03-01 00:00:00.000", "2024-03-01 00:00:01.000",
                                       "2024-03-01 00:00:02.250", "2024-03-01 00:00:03.500"]
    assert manifest.partitioner == "duckdb hash(app, user) % 1"


def test_epoch_milliseconds_become_timestamps(tmp_path: Path) -> None:
    root = tmp_path / "hist"
    base = int(pd.Timestamp("2024-03-01 01:00").timestamp() * 1000)
    frame = pd.DataFrame({"k": ["a", "b", "c"], "t": [base + 1500, base, base + 999]})
    write_hour(root, 1, [frame])
    out = tmp_path / "topic"
    prepare_topic(root, key="k", time="t", partitions=1, start="2024-03-01 01:00",
                  end="2024-03-01 02:00", out=out)
    assert [r["t"] for r in read_partitions(out)[0]] == [
        "2024-03-01 01:00:00.000", "2024-03-01 01:00:00.999", "2024-03-01 01:00:01.500"]


def test_other_timestamp_columns_are_formatted_for_flink(tmp_path: Path) -> None:
    root = tmp_path / "hist"
    frame = pd.DataFrame({
        "k": ["a"], "ts": [pd.Timestamp("2024-03-01 00:00:01")],
        "seen": [pd.Timestamp("2024-02-29 23:59:59.123456")],
        "seen_utc": [pd.Timestamp("2024-03-01 02:00:00", tz="Europe/Paris")],
    })
    write_hour(root, 0, [frame])
    out = tmp_path / "topic"
    prepare_topic(root, key="k", time="ts", partitions=1, start="2024-03-01",
                  end="2024-03-01 01:00", out=out)
    row = read_partitions(out)[0][0]
    assert row["seen"] == "2024-02-29 23:59:59.123"
    assert row["seen_utc"] == "2024-03-01 01:00:00.000Z"
    assert dict(LocalTopic.open(out).columns)["seen_utc"] == "TIMESTAMP_LTZ(3)"


def test_rows_outside_the_range_are_counted_not_written(tmp_path: Path) -> None:
    root = tmp_path / "hist"
    frame = pd.DataFrame({"k": ["a", "b", "c"],
                          "ts": pd.to_datetime(["2024-03-01 00:10", "2024-03-01 00:40",
                                                "2024-03-01 00:50"])})
    write_hour(root, 0, [frame])
    manifest = prepare_topic(root, key="k", time="ts", partitions=1, start="2024-03-01 00:30",
                             end="2024-03-01 00:45", out=tmp_path / "topic")
    assert manifest.rows == 1 and manifest.out_of_range == 2
    assert manifest.files[0].rows == 3 and manifest.files[0].written == 1


def test_null_keys_fail_with_a_count_and_nothing_is_written(history, tmp_path: Path) -> None:
    root, _ = history
    bad = clicks(1, 10, seed=99)
    bad.loc[[2, 5, 7], "user_id"] = None
    path = root / "date=2024-03-01" / "hour=01" / "part-00009.parquet"
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), path)
    out = tmp_path / "topic"
    with pytest.raises(DataError, match=r"null_key: 3 row\(s\) with a NULL key.*part-00009"):
        prepare_topic(root, key="user_id", time="ts", partitions=2, start=START, end=END,
                      out=out)
    assert not out.exists()


def test_null_keys_can_be_routed_aside(history, tmp_path: Path) -> None:
    root, expected = history
    bad = clicks(1, 10, seed=99)
    bad.loc[[2, 5, 7], "user_id"] = None
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False),
                   root / "date=2024-03-01" / "hour=01" / "part-00009.parquet")
    out = tmp_path / "topic"
    manifest = prepare_topic(root, key="user_id", time="ts", partitions=2, start=START,
                             end=END, out=out, null_keys="route")
    routed = [json.loads(x) for x in (out / NULL_KEYS_FILE).read_text().splitlines()]
    assert len(routed) == 3 == manifest.null_keys
    assert all(r["user_id"] is None for r in routed)
    assert [r["ts"] for r in routed] == sorted(r["ts"] for r in routed)
    assert manifest.rows == len(expected) + 7
    assert manifest.null_keys_path == str(out / NULL_KEYS_FILE)
    assert sum(len(p) for p in read_partitions(out)) == manifest.rows


def test_a_failed_run_keeps_the_previous_topic(history, tmp_path: Path) -> None:
    root, _ = history
    out = tmp_path / "topic"
    prepare_topic(root, key="user_id", time="ts", partitions=2, start=START, end=END, out=out)
    before = tree_digest(out)
    with pytest.raises(DataError, match="missing_partition"):
        prepare_topic(root, key="user_id", time="ts", partitions=2, start=START,
                      end="2024-03-01 05:00", out=out)
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hist", "topic"]


def test_refuses_to_replace_a_directory_it_did_not_write(history, tmp_path: Path) -> None:
    root, _ = history
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="refusing to replace"):
        prepare_topic(root, key="user_id", time="ts", partitions=2, start=START, end=END,
                      out=out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_argument_errors(history, tmp_path: Path) -> None:
    root, _ = history
    with pytest.raises(ConfigError, match="partitions"):
        prepare_topic(root, key="user_id", time="ts", partitions=0, start=START, end=END,
                      out=tmp_path / "t")
    with pytest.raises(ConfigError, match="must be after"):
        prepare_topic(root, key="user_id", time="ts", partitions=1, start=END, end=START,
                      out=tmp_path / "t")
    with pytest.raises(DataError, match="no column 'nope'"):
        prepare_topic(root, key="nope", time="ts", partitions=1, start=START, end=END,
                      out=tmp_path / "t")
    with pytest.raises(DataError, match="no such directory"):
        prepare_topic(tmp_path / "absent", key="user_id", time="ts", partitions=1,
                      start=START, end=END, out=tmp_path / "t")


FLINK_READER = """
import json, sys
from pyflink.table import EnvironmentSettings, TableEnvironment
topic = sys.argv[1]
manifest = json.load(open(topic + "/_topic.json"))
cols = ", ".join(f"`{c}` {t}" for c, t in manifest["columns"])
env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
env.get_config().set("parallelism.default", "1")
env.execute_sql(f"CREATE TABLE t ({cols}) WITH ('connector' = 'filesystem', "
                f"'path' = 'file://{topic}', 'format' = 'json', "
                "'json.ignore-parse-errors' = 'false')")
result = env.execute_sql("SELECT COUNT(*), COUNT(ts), CAST(MIN(ts) AS STRING), "
                         "CAST(MAX(ts) AS STRING), COUNT(seen_utc) FROM t").collect()
print(json.dumps([[str(v) for v in row] for row in result]))
"""


@pytest.mark.flink
@pytest.mark.slow
def test_flinks_json_format_reads_the_prepared_topic(history, tmp_path: Path) -> None:
    """Flink's own json format parses every line (timestamps included) and skips the
    manifest and the routed null keys (hidden files)."""
    root, expected = history
    extra = clicks(2, 5, seed=7)
    extra.loc[[0, 1], "user_id"] = None
    frames = []
    for path in sorted(root.rglob("*.parquet")):
        frame = pd.read_parquet(path)
        frame["seen_utc"] = (frame["ts"] - pd.Timedelta(seconds=1)).dt.tz_localize(
            "UTC").astype("datetime64[us, UTC]")
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
        frames.append(frame)
    extra["seen_utc"] = extra["ts"].dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    pq.write_table(pa.Table.from_pandas(extra, preserve_index=False),
                   root / "date=2024-03-01" / "hour=02" / "part-00009.parquet")
    out = tmp_path / "topic"
    manifest = prepare_topic(root, key="user_id", time="ts", partitions=3, start=START,
                             end=END, out=out, null_keys="route")
    assert (out / NULL_KEYS_FILE).is_file() and manifest.null_keys == 2
    script = tmp_path / "read.py"
    script.write_text(FLINK_READER)
    run = subprocess.run([sys.executable, str(script), str(out)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    (count, with_ts, lo, hi, with_ltz), = json.loads(run.stdout.strip().splitlines()[-1])
    assert int(count) == int(with_ts) == int(with_ltz) == manifest.rows == len(expected) + 3
    assert lo[:23] == min(p.min_time for p in manifest.partitions if p.rows)
    assert hi[:23] == max(p.max_time for p in manifest.partitions if p.rows)


def test_awkward_column_names_are_quoted(tmp_path: Path) -> None:
    root = tmp_path / "hist"
    frame = pd.DataFrame({
        'user "id"': ["b", "a", "c"],
        "event time": pd.to_datetime(["2024-03-01 00:00:03", "2024-03-01 00:00:01",
                                      "2024-03-01 00:00:02"]),
        "it's": [1, 2, 3],
    })
    write_hour(root, 0, [frame])
    out = tmp_path / "to'pic"
    manifest = prepare_topic(root, key='user "id"', time="event time", partitions=1,
                             start="2024-03-01", end="2024-03-01 01:00", out=out)
    rows = read_partitions(out)[0]
    assert [r["it's"] for r in rows] == [2, 3, 1]
    assert manifest.partitioner == 'duckdb hash(user "id") % 1'
    from ultron_nb.engines.duckdb.checks import check_order

    assert check_order(out).ok
