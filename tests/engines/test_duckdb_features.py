"""The embedded feature store on real DuckDB: layout, write validation, versions, preload,
writers in other threads and processes. Lookup semantics: test_duckdb_features_asof.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ultron_nb.engines.duckdb.features import DuckDBFeatureStore
from ultron_nb.errors import ConfigError, DataError, NotFoundError

ROOT = Path(__file__).resolve().parents[2]
T = pd.Timestamp("2024-03-01 10:00")


@pytest.fixture
def store(tmp_path: Path):
    with DuckDBFeatureStore(tmp_path / "features") as s:
        yield s


def frame(users: list[str], x: list[float], vt: pd.Timestamp = T, **extra) -> pd.DataFrame:
    return pd.DataFrame({"user": users, "vt": [vt] * len(users), "x": x, **extra})


def test_layout_one_file_per_write_and_what_it_superseded(store) -> None:
    store.write("f", frame(["b", "a", "a"], [1.0, 2.0, 3.0]), "user", "vt")
    store.write("f", frame(["a"], [4.0]), "user", "vt")
    folder = store.root / "f"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "_table.json", "s-00000002.parquet", "w-00000001.parquet", "w-00000002.parquet"]
    meta = json.loads((folder / "_table.json").read_text())
    assert meta["format"] == 2 and meta["key"] == ["user"] and meta["version_time"] == "vt"
    first = pq.read_table(folder / "w-00000001.parquet").to_pydict()
    assert first["user"] == ["b", "a"] and first["x"] == [1.0, 3.0]  # a's later row won
    assert pq.read_table(folder / "s-00000002.parquet").to_pydict() == {"write": [1],
                                                                       "row": [1]}
    assert store.versions("f")["x"].tolist() == [4.0, 1.0]


def test_write_refuses_bad_input_and_stores_nothing(store) -> None:
    with pytest.raises(DataError, match=r"1 row\(s\) with a NULL key; nothing written"):
        store.write("f", frame(["a", None], [1.0, 2.0]), "user", "vt")
    with pytest.raises(DataError, match="without a version time"):
        store.write("f", pd.DataFrame({"user": ["a", "b"], "vt": [T, pd.NaT]}), "user", "vt")
    with pytest.raises(DataError, match="without a version time"):
        store.write("f", pd.DataFrame({"user": ["a"], "vt": ["not a time"]}), "user", "vt")
    with pytest.raises(DataError, match="without an ingest time"):
        store.write("f", frame(["a"], [1.0], seen=[pd.NaT]), "user", "vt", ingest_time="seen")
    with pytest.raises(DataError, match="no column 'vt'"):
        store.write("f", pd.DataFrame({"user": ["a"], "when": [T]}), "user", "vt")
    with pytest.raises(DataError, match="epoch numbers need a unit"):
        store.write("f", pd.DataFrame({"user": ["a"], "vt": [1709251200]}), "user", "vt")
    with pytest.raises(ConfigError, match="unit: 'hours'"):
        store.write("f", frame(["a"], [1.0]), "user", "vt", unit="hours")
    with pytest.raises(ConfigError, match="feature table name"):
        store.write("../evil", frame(["a"], [1.0]), "user", "vt")
    assert store.tables() == []
    store.write("f", frame(["a"], [1.0]), "user", "vt")
    with pytest.raises(DataError, match="column 'x' is VARCHAR, the table has DOUBLE"):
        store.write("f", pd.DataFrame({"user": ["a"], "vt": [T], "x": ["1"]}), "user", "vt")
    with pytest.raises(DataError, match="keyed by user"):
        store.write("f", pd.DataFrame({"j": ["a"], "vt": [T], "x": [1.0]}), "j", "vt")
    assert store.tables() == ["f"] and len(store.versions("f")) == 1


def test_null_keys_can_be_dropped_and_counted(store) -> None:
    result = store.write("f", frame(["a", None, None], [1.0, 2.0, 3.0]), "user", "vt",
                         null_keys="drop")
    assert (result.rows_in, result.null_keys_dropped, result.versions) == (3, 2, 1)
    assert "2 null key(s) dropped" in str(result)


def test_epoch_version_times_with_a_unit(store) -> None:
    store.write("f", pd.DataFrame({"user": ["a"], "vt": [1709287200000], "x": [1.0]}), "user",
                "vt", unit="ms")
    assert store.versions("f")["vt"].tolist() == [pd.Timestamp("2024-03-01 10:00", tz="UTC")]


def test_versions_of_one_entity_oldest_first(store) -> None:
    store.write("f", pd.DataFrame({"user": ["a", "b", "a"], "vt": pd.to_datetime(
        ["2024-03-01 02:00", "2024-03-01 01:00", "2024-03-01 01:00"]), "x": [2.0, 5.0, 1.0]}),
        "user", "vt")
    got = store.versions("f", "a")
    assert got["x"].tolist() == [1.0, 2.0]
    assert str(got["vt"].dtype) == str(got["ingest_time"].dtype) == "datetime64[us, UTC]"
    with pytest.raises(ConfigError, match="give 1 key value"):
        store.versions("f", ("a", "b"))


def test_compound_keys_and_name_clashes(store) -> None:
    feats = pd.DataFrame({"app": ["x", "x", "y"], "user": [1, 1, 1],
                          "vt": pd.to_datetime(["2024-03-01 01:00", "2024-03-01 02:00",
                                                "2024-03-01 01:00"]),
                          "label": [10, 20, 30]})
    store.write("t", feats, ["app", "user"], "vt")
    samples = pd.DataFrame({"app": ["x", "y", "y"], "uid": [1, 1, 2], "label": [0, 1, 2],
                            "ts": pd.to_datetime(["2024-03-01 01:30", "2024-03-01 05:00",
                                                  "2024-03-01 05:00"])})
    got = store.as_of("t", samples, key=["app", "uid"], time="ts")
    assert got["t__label"].tolist()[:2] == [10, 30]  # renamed: samples have "label" too
    assert pd.isna(got["t__label"][2]) and got["label"].tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="keyed by app, user; got 1"):
        store.as_of("t", samples, key="app", time="ts")


def test_preload_loads_in_a_background_thread(store, monkeypatch) -> None:
    store.write("f", frame(["a"], [1.0]), "user", "vt")
    with DuckDBFeatureStore(store.root) as fresh:
        threads: list[str] = []
        original = DuckDBFeatureStore._load

        def spy(self, table):
            threads.append(threading.current_thread().name)
            return original(self, table)

        monkeypatch.setattr(DuckDBFeatureStore, "_load", spy)
        future = fresh.preload("f")
        assert future.result(timeout=60) == "f"
        assert threads == [threads[0]] and threads[0].startswith("ultron-preload")
        assert fresh._states["f"].rows == 1  # loaded before any lookup
        got = fresh.as_of("f", pd.DataFrame({"user": ["a"], "ts": [T]}), time="ts")
        assert got["x"].tolist() == [1.0] and len(threads) == 1


def test_another_process_writes_are_picked_up(store) -> None:
    store.write("f", frame(["a", "b"], [1.0, 5.0]), "user", "vt")
    samples = pd.DataFrame({"user": ["a", "b"], "ts": [T, T]})
    assert store.as_of("f", samples, time="ts")["x"].tolist() == [1.0, 5.0]
    code = (
        "import sys, pandas as pd\n"
        "from ultron_nb.engines.duckdb.features import DuckDBFeatureStore\n"
        "with DuckDBFeatureStore(sys.argv[1]) as s:\n"
        "    s.write('f', pd.DataFrame({'user': ['a'], 'vt': [pd.Timestamp('2024-03-01 10:00')],"
        " 'x': [2.0]}), 'user', 'vt')\n")
    subprocess.run([sys.executable, "-c", code, str(store.root)], check=True, cwd=ROOT,
                   timeout=120)
    assert store.as_of("f", samples, time="ts")["x"].tolist() == [2.0, 5.0]
    result = store.write("f", frame(["b"], [6.0]), "user", "vt")
    assert result.write == 3 and result.restated == 1
    assert store.as_of("f", samples, time="ts")["x"].tolist() == [2.0, 6.0]


def test_writes_from_several_threads_all_land(store) -> None:
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            store.write("f", frame([f"u{i}"] * 3, [float(i)] * 3,
                                   vt=T + pd.Timedelta(seconds=i)), "user", "vt")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sorted(store.versions("f")["x"].tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert sorted(p.name for p in (store.root / "f").glob("w-*.parquet")) == [
        f"w-{i:08d}.parquet" for i in range(1, 7)]


def test_unknown_tables_and_old_layouts(store) -> None:
    with pytest.raises(NotFoundError, match="'nope' does not exist"):
        store.as_of("nope", pd.DataFrame({"user": ["a"], "ts": [T]}), time="ts")
    with pytest.raises(NotFoundError):
        store.preload("nope")
    old = store.root / "old"
    old.mkdir(parents=True)
    (old / "_table.json").write_text(json.dumps({"key": ["k"], "version_time": "vt",
                                                 "columns": [["k", "VARCHAR"]]}))
    with pytest.raises(ConfigError, match="has layout 1; this version reads layout 2"):
        store.versions("old")


def test_string_version_times_and_parquet_paths(store, tmp_path: Path) -> None:
    feats = pd.DataFrame({"k": ["a", "a"], "vt": ["2024-03-01 10:00:00",
                                                  "2024-03-01T12:00:00+02:00"], "x": [1, 2]})
    path = tmp_path / "feats.parquet"
    feats.to_parquet(path)
    store.write("s", str(path), "k", "vt")
    samples = tmp_path / "samples.parquet"
    pd.DataFrame({"k": ["a", "a"], "ts": pd.to_datetime(["2024-03-01 09:59",
                                                         "2024-03-01 10:00"])}).to_parquet(
        samples)
    got = store.as_of("s", samples, time="ts")
    assert pd.isna(got["x"][0]) and got["x"][1] == 2  # 12:00+02:00 is 10:00 UTC, written later
    assert dict(store.meta("s").columns)["vt"] == "TIMESTAMP"
