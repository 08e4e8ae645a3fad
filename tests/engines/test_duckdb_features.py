"""The embedded feature store: ASOF lookups against a pandas merge_asof oracle, versions,
write validation, background preload."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ultron_nb.engines.duckdb.features import DuckDBFeatureStore
from ultron_nb.errors import ConfigError, DataError, NotFoundError


@pytest.fixture
def store(tmp_path: Path):
    with DuckDBFeatureStore(tmp_path / "features") as s:
        yield s


def feature_versions(seed: int, keys: int = 30, per_key: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(keys):
        # Distinct version times per key (whole seconds, so ties with samples happen).
        secs = np.sort(rng.choice(86_400, per_key, replace=False))
        for s in secs:
            rows.append((f"u{k:02d}", pd.Timestamp("2024-03-01") + pd.Timedelta(seconds=int(s)),
                         float(rng.random()), int(rng.integers(0, 100))))
    frame = pd.DataFrame(rows, columns=["user_id", "version_time", "ctr", "clicks"])
    return frame.sample(frac=1, random_state=seed).reset_index(drop=True)


def samples_frame(seed: int, n: int = 2000, keys: int = 35) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": [f"u{k:02d}" for k in rng.integers(0, keys, n)],  # some keys have no features
        "ts": pd.Timestamp("2024-03-01") + pd.to_timedelta(rng.integers(-3600, 90_000, n),
                                                           unit="s"),
        "label": rng.integers(0, 2, n),
    })


def oracle(samples: pd.DataFrame, features: pd.DataFrame, table: str) -> pd.DataFrame:
    """pandas merge_asof: the latest version with version_time <= ts, per user."""
    left = samples.sort_values("ts", kind="stable")
    right = features.rename(columns={"version_time": f"{table}__version_time"})
    right = right.assign(__t=right[f"{table}__version_time"]).sort_values("__t")
    merged = pd.merge_asof(left, right, left_on="ts", right_on="__t", by="user_id",
                           direction="backward", allow_exact_matches=True)
    return merged.drop(columns="__t")


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    cols = sorted(frame.columns)
    out = frame[cols].sort_values(["user_id", "ts", "label"], kind="stable")
    out = out.reset_index(drop=True)
    for c in out.columns:
        if str(out[c].dtype).startswith("datetime64"):
            out[c] = out[c].astype("datetime64[us]")
    return out


def test_as_of_matches_pandas_merge_asof(store: DuckDBFeatureStore) -> None:
    features = feature_versions(1)
    samples = samples_frame(2)
    # Exact ties: some samples happen exactly at a version time.
    samples.loc[:49, "ts"] = features["version_time"].iloc[:50].to_numpy()
    samples.loc[:49, "user_id"] = features["user_id"].iloc[:50].to_numpy()
    assert store.write("user_stats", features, "user_id", "version_time") == 300
    got = store.as_of("user_stats", samples, "user_id", "ts")
    want = oracle(samples, features, "user_stats")
    assert len(got) == len(samples)
    pd.testing.assert_frame_equal(canonical(got), canonical(want), check_dtype=False)


def test_a_sample_never_sees_a_later_version(store: DuckDBFeatureStore) -> None:
    features = feature_versions(3)
    store.write("user_stats", features, "user_id", "version_time")
    got = store.as_of("user_stats", samples_frame(4), "user_id", "ts")
    seen = got.dropna(subset=["user_stats__version_time"])
    assert (seen["user_stats__version_time"] <= seen["ts"]).all()
    # And it is the latest such version: no version of that user lies in between.
    by_user = features.groupby("user_id")["version_time"].apply(sorted).to_dict()
    for row in seen.head(300).itertuples():
        later = [v for v in by_user[row.user_id]
                 if row.user_stats__version_time < v <= row.ts]
        assert later == []


def test_samples_before_any_version_get_nulls(store: DuckDBFeatureStore) -> None:
    store.write("f", pd.DataFrame({"user_id": ["a"], "version_time": [
        pd.Timestamp("2024-03-01 10:00")], "x": [1.0]}), "user_id", "version_time")
    samples = pd.DataFrame({"user_id": ["a", "a", "b"], "ts": pd.to_datetime([
        "2024-03-01 09:59:59", "2024-03-01 10:00:00", "2024-03-01 11:00:00"])})
    got = store.as_of("f", samples, "user_id", "ts", keep_order=True)
    assert got["x"].isna().tolist() == [True, False, True]
    assert got["f__version_time"].tolist()[1] == pd.Timestamp("2024-03-01 10:00")


def test_keep_order_and_arrow_output(store: DuckDBFeatureStore) -> None:
    store.write("user_stats", feature_versions(5), "user_id", "version_time")
    samples = samples_frame(6, n=500)
    got = store.as_of("user_stats", samples, "user_id", "ts", keep_order=True)
    assert got["ts"].tolist() == samples["ts"].tolist()
    assert got["user_id"].tolist() == samples["user_id"].tolist()
    table = store.as_of("user_stats", pa.Table.from_pandas(samples), "user_id", "ts",
                        output="arrow", keep_order=True)
    assert isinstance(table, pa.Table)
    assert table.column("user_id").to_pylist() == samples["user_id"].tolist()
    assert "__ultron_rn" not in table.column_names


def test_time_zone_aware_samples_compare_in_utc(store: DuckDBFeatureStore) -> None:
    store.write("f", pd.DataFrame({"user_id": ["a", "a"], "version_time": pd.to_datetime(
        ["2024-03-01 10:00", "2024-03-01 11:00"]), "x": [1.0, 2.0]}), "user_id",
        "version_time")
    samples = pd.DataFrame({"user_id": ["a"], "ts": [
        pd.Timestamp("2024-03-01 11:30", tz="Europe/Paris")]})  # 10:30 UTC
    assert store.as_of("f", samples, "user_id", "ts")["x"].tolist() == [1.0]


def test_compound_keys_and_name_clashes(store: DuckDBFeatureStore) -> None:
    feats = pd.DataFrame({"app": ["x", "x", "y"], "user": [1, 1, 1],
                          "vt": pd.to_datetime(["2024-03-01 01:00", "2024-03-01 02:00",
                                                "2024-03-01 01:00"]),
                          "label": [10, 20, 30]})
    store.write("t", feats, ["app", "user"], "vt")
    samples = pd.DataFrame({"app": ["x", "y"], "user": [1, 1], "label": [0, 1],
                            "ts": pd.to_datetime(["2024-03-01 01:30", "2024-03-01 05:00"])})
    got = store.as_of("t", samples, ["app", "user"], "ts", keep_order=True)
    assert got["t__label"].tolist() == [10, 30]  # renamed: samples have "label" too
    assert got["label"].tolist() == [0, 1]


def test_later_writes_replace_the_same_version_and_reload(store: DuckDBFeatureStore) -> None:
    t = pd.Timestamp("2024-03-01 10:00")
    store.write("f", pd.DataFrame({"user_id": ["a", "b"], "version_time": [t, t],
                                   "x": [1.0, 5.0]}), "user_id", "version_time")
    samples = pd.DataFrame({"user_id": ["a", "b"], "ts": [t, t]})
    assert store.as_of("f", samples, "user_id", "ts", keep_order=True)["x"].tolist() == [1.0,
                                                                                          5.0]
    store.write("f", pd.DataFrame({"user_id": ["a"], "version_time": [t], "x": [2.0]}),
                "user_id", "version_time")
    assert store.as_of("f", samples, "user_id", "ts", keep_order=True)["x"].tolist() == [2.0,
                                                                                          5.0]
    assert store.versions("f", "a")["x"].tolist() == [2.0]
    assert sorted(p.name for p in (store.root / "f").iterdir()) == [
        "_table.json", "v-00000001.parquet", "v-00000002.parquet"]


def test_versions_of_one_entity_oldest_first(store: DuckDBFeatureStore) -> None:
    features = feature_versions(7)
    store.write("user_stats", features, "user_id", "version_time")
    got = store.versions("user_stats", "u03")
    want = features[features["user_id"] == "u03"].sort_values("version_time")
    assert got["version_time"].tolist() == want["version_time"].tolist()
    assert got["ctr"].tolist() == want["ctr"].tolist()
    assert len(store.versions("user_stats")) == len(features)
    with pytest.raises(ConfigError, match="give 1 key value"):
        store.versions("user_stats", ("a", "b"))


def test_preload_loads_in_a_background_thread(store: DuckDBFeatureStore, monkeypatch) -> None:
    store.write("user_stats", feature_versions(8), "user_id", "version_time")
    threads: list[str] = []
    original = DuckDBFeatureStore._load

    def spy(self, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DuckDBFeatureStore, "_load", spy)
    future = store.preload("user_stats")
    assert store.preload("user_stats") is future  # unchanged table: same load
    name = future.result(timeout=60)
    assert name.startswith("__ultron_ft_user_stats_")
    assert threads and threads[0].startswith("ultron-preload")
    assert threads[0] != threading.current_thread().name
    store.as_of("user_stats", samples_frame(9, n=10), "user_id", "ts")
    assert len(threads) == 1  # as_of used the preloaded table
    store.write("user_stats", feature_versions(10).assign(
        version_time=lambda f: f["version_time"] + pd.Timedelta(days=1)), "user_id",
        "version_time")
    assert store.preload("user_stats") is not future
    store.as_of("user_stats", samples_frame(9, n=10), "user_id", "ts")
    assert len(threads) == 2


def test_write_refuses_bad_versions(store: DuckDBFeatureStore) -> None:
    t = pd.Timestamp("2024-03-01")
    with pytest.raises(DataError, match=r"1 row\(s\) with a NULL key"):
        store.write("f", pd.DataFrame({"k": ["a", None], "vt": [t, t]}), "k", "vt")
    with pytest.raises(DataError, match="without a version time"):
        store.write("f", pd.DataFrame({"k": ["a", "b"], "vt": [t, pd.NaT]}), "k", "vt")
    with pytest.raises(DataError, match="appear more than once"):
        store.write("f", pd.DataFrame({"k": ["a", "a"], "vt": [t, t]}), "k", "vt")
    with pytest.raises(DataError, match="no column 'vt'"):
        store.write("f", pd.DataFrame({"k": ["a"], "when": [t]}), "k", "vt")
    with pytest.raises(DataError, match="not a timestamp"):
        store.write("f", pd.DataFrame({"k": ["a"], "vt": [1709251200]}), "k", "vt")
    assert store.tables() == []
    store.write("f", pd.DataFrame({"k": ["a"], "vt": [t], "x": [1.0]}), "k", "vt")
    with pytest.raises(DataError, match="column 'x' is VARCHAR, the table has DOUBLE"):
        store.write("f", pd.DataFrame({"k": ["a"], "vt": [t], "x": ["1"]}), "k", "vt")
    with pytest.raises(DataError, match="keyed by k"):
        store.write("f", pd.DataFrame({"j": ["a"], "vt": [t], "x": [1.0]}), "j", "vt")
    with pytest.raises(ConfigError, match="feature table name"):
        store.write("../evil", pd.DataFrame({"k": ["a"], "vt": [t]}), "k", "vt")
    assert store.tables() == ["f"]


def test_unknown_tables(store: DuckDBFeatureStore) -> None:
    with pytest.raises(NotFoundError, match="'nope' does not exist"):
        store.as_of("nope", samples_frame(1, n=3), "user_id", "ts")
    with pytest.raises(NotFoundError):
        store.preload("nope")


def test_string_version_times_and_parquet_paths(store: DuckDBFeatureStore, tmp_path: Path
                                                ) -> None:
    feats = pd.DataFrame({"k": ["a", "a"], "vt": ["2024-03-01 10:00:00", "2024-03-01T12:00:00"],
                          "x": [1, 2]})
    path = tmp_path / "feats.parquet"
    feats.to_parquet(path)
    store.write("s", str(path), "k", "vt")
    samples = tmp_path / "samples.parquet"
    pd.DataFrame({"k": ["a", "a"], "ts": pd.to_datetime(["2024-03-01 11:00",
                                                         "2024-03-01 12:00"])}).to_parquet(
        samples)
    got = store.as_of("s", samples, "k", "ts").sort_values("ts")
    assert got["x"].tolist() == [1, 2]
    assert str(store.meta("s").columns[1][1]) == "TIMESTAMP"
