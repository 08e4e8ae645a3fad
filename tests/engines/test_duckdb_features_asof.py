"""Point-in-time lookups on real DuckDB, every row checked against a plain-Python oracle.

Edge cases named in issue 17: one output row per sample in input order (F1), three and more
duplicates (F2), a late restatement caught in known-time mode and visible in event-time mode
(F3), inclusive ties, null keys, keys without features, samples before a key's first version,
TTL, several tables, and time-zone-aware vs naive vs epoch inputs.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.support.pit_oracle import Oracle
from ultron_nb.engines.duckdb.checks import check_leakage
from ultron_nb.engines.duckdb.features import DuckDBFeatureStore
from ultron_nb.errors import ConfigError, DataError

T0 = datetime(2024, 3, 1)


@pytest.fixture
def store(tmp_path: Path):
    with DuckDBFeatureStore(tmp_path / "features") as s:
        yield s


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def dirty_writes(seed: int, keys: int = 25, writes: int = 3, per_write: int = 160
                 ) -> list[list[dict]]:
    """Several writes of (user, vt, ingest, x, n): repeats within and across writes, whole
    seconds so that ties with samples happen."""
    rng = np.random.default_rng(seed)
    out = []
    for w in range(writes):
        rows = []
        for _ in range(per_write):
            k = f"u{int(rng.integers(0, keys)):02d}"
            vt = at(int(rng.integers(0, 400)) * 10)
            ingest = vt + timedelta(seconds=int(rng.integers(0, 3)) * 100 + w)
            rows.append({"user": k, "vt": vt, "ingest": ingest, "x": float(rng.random()),
                         "n": int(rng.integers(0, 1000))})
        # ≥ 3 exact repeats of one (key, vt, ingest), the later row winning.
        rows += [dict(rows[0], x=float(i)) for i in range(3)]
        out.append(rows)
    return out


def samples_frame(seed: int, n: int = 700, keys: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = [f"u{int(k):02d}" for k in rng.integers(0, keys, n)]  # u25..u29: no features
    users[:5] = [None] * 5  # null keys
    ts = [at(int(s) * 10 - 300) for s in rng.integers(0, 460, n)]  # some before any version
    frame = pd.DataFrame({"user": users, "ts": ts, "label": rng.integers(0, 2, n)})
    return pd.concat([frame, frame.iloc[:20]], ignore_index=True)  # repeated samples


def write_all(store: DuckDBFeatureStore, oracle: Oracle, writes: list[list[dict]],
              ingest: str | None = "ingest", null_keys: str = "fail") -> None:
    for rows in writes:
        frame = pd.DataFrame(rows)
        if ingest is None:
            frame = frame.drop(columns="ingest")
            rows = [{k: v for k, v in r.items() if k != "ingest"} for r in rows]
        store.write("f", frame, "user", "vt", ingest_time=ingest, null_keys=null_keys)
        oracle.write(rows, "user", "vt", ingest)


def naive(value: object) -> datetime | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def assert_matches(got: pd.DataFrame, samples: pd.DataFrame, oracle: Oracle, *,
                   known: str | None = None, ttl: timedelta | None = None,
                   prefix: str = "f") -> None:
    """Every output row equals the oracle's answer for the sample in the same position."""
    assert len(got) == len(samples)
    assert got["user"].tolist() == samples["user"].tolist()
    assert got["label"].tolist() == samples["label"].tolist()
    for i, row in enumerate(got.itertuples(index=False)):
        sample = samples.iloc[i]
        want = oracle.lookup(sample["user"], naive(sample["ts"]), ttl=ttl,
                             known_at=naive(sample[known]) if known else None)
        vt = naive(getattr(row, f"{prefix}__version_time"))
        if want is None:
            assert vt is None and pd.isna(row.x), (i, sample.to_dict(), row)
            continue
        assert vt == want.version_time, (i, sample.to_dict())
        assert row.x == want.values["x"] and row.n == want.values["n"], (i, sample.to_dict())
        if want.ingest is not None:
            assert naive(getattr(row, f"{prefix}__ingest_time")) == want.ingest


def test_f1_one_row_per_sample_in_input_order_against_the_oracle(store) -> None:
    oracle = Oracle()
    write_all(store, oracle, dirty_writes(1))
    samples = samples_frame(2).sample(frac=1, random_state=3)  # shuffled, index kept
    got = store.as_of("f", samples, time="ts")
    assert list(got.index) == list(samples.index)
    assert_matches(got, samples.reset_index(drop=True), oracle)
    meta = got.attrs["ultron"]["tables"]["f"]
    no_features = samples["user"].isin([f"u{k}" for k in range(25, 30)])
    assert meta["no_key"] == samples["user"].isna().sum() + no_features.sum() > 10


def test_f1_every_input_and_output_form_gives_the_same_rows(store, tmp_path: Path) -> None:
    oracle = Oracle()
    write_all(store, oracle, dirty_writes(4))
    samples = samples_frame(5)
    path = tmp_path / "samples.parquet"
    samples.to_parquet(path, index=False)
    want = store.as_of("f", samples, time="ts")
    assert_matches(want, samples, oracle)
    arrow = store.as_of("f", pa.Table.from_pandas(samples, preserve_index=False), time="ts",
                        output="arrow")
    assert isinstance(arrow, pa.Table)
    rel = store.as_of("f", duckdb.sql("SELECT * FROM samples"), time="ts", output="duckdb")
    assert isinstance(rel, duckdb.DuckDBPyRelation)
    for other in (arrow.to_pandas(), rel.df(), store.as_of("f", str(path), time="ts")):
        pd.testing.assert_frame_equal(other.reset_index(drop=True),
                                      want.reset_index(drop=True), check_dtype=False)


def test_f2_three_or_more_duplicates_latest_ingest_wins(store) -> None:
    t = at(0)
    rows = [{"user": "a", "vt": t, "ingest": at(5), "x": 1.0, "n": 1},
            {"user": "a", "vt": t, "ingest": at(9), "x": 2.0, "n": 2},  # latest ingest
            {"user": "a", "vt": t, "ingest": at(7), "x": 3.0, "n": 3},
            {"user": "b", "vt": t, "ingest": at(5), "x": 4.0, "n": 4},
            {"user": "b", "vt": t, "ingest": at(5), "x": 5.0, "n": 5},
            {"user": "b", "vt": t, "ingest": at(5), "x": 6.0, "n": 6}]  # same ingest: last row
    first = store.write("f", pd.DataFrame(rows), "user", "vt", ingest_time="ingest")
    assert (first.rows_in, first.versions, first.duplicates) == (6, 4, 2)
    assert (first.outdated, first.current) == (2, 2)
    samples = pd.DataFrame({"user": ["a", "b"], "ts": [t, t], "label": [0, 1]})
    assert store.as_of("f", samples, time="ts")["x"].tolist() == [2.0, 6.0]
    # Across writes: a later ingest restates, an older one arrives outdated.
    second = store.write("f", pd.DataFrame([
        {"user": "a", "vt": t, "ingest": at(20), "x": 7.0, "n": 7},
        {"user": "b", "vt": t, "ingest": at(1), "x": 8.0, "n": 8}]), "user", "vt",
        ingest_time="ingest")
    assert (second.restated, second.outdated, second.current) == (1, 1, 2)
    assert store.as_of("f", samples, time="ts")["x"].tolist() == [7.0, 6.0]
    # Without an ingest column the write's own time is the ingest: the later write wins.
    store.write("f", pd.DataFrame([{"user": "b", "vt": t, "x": 9.0, "n": 9}] * 3), "user",
                "vt")
    assert store.as_of("f", samples, time="ts")["x"].tolist() == [7.0, 9.0]
    history = store.versions("f", "a", history=True)
    assert history["x"].tolist() == [1.0, 3.0, 2.0, 7.0]  # every version that was known
    assert history["current"].tolist() == [False, False, False, True]


def test_f2_dirty_writes_against_the_oracle_also_after_reopening(store, tmp_path) -> None:
    oracle = Oracle()
    writes = dirty_writes(6, writes=4)
    for rows in writes:  # rows without a key are dropped (and counted)
        rows[5]["user"] = rows[50]["user"] = None
    write_all(store, oracle, writes, null_keys="drop")
    samples = samples_frame(7)
    assert_matches(store.as_of("f", samples, time="ts"), samples, oracle)
    with DuckDBFeatureStore(store.root) as again:  # rebuilt from the files alone
        assert_matches(again.as_of("f", samples, time="ts"), samples, oracle)


def test_f3_a_late_restatement_is_caught_in_known_time_mode(store) -> None:
    store.write("f", pd.DataFrame({"user": ["a", "b"], "vt": [at(0), at(0)],
                                   "ingest": [at(10), at(10)], "x": [1.0, 5.0],
                                   "n": [1, 5]}), "user", "vt", ingest_time="ingest")
    # A backfill a day later restates a's version: a sample at t=100 could not know it.
    store.write("f", pd.DataFrame({"user": ["a"], "vt": [at(0)], "ingest": [at(86_400)],
                                   "x": [2.0], "n": [2]}), "user", "vt", ingest_time="ingest")
    samples = pd.DataFrame({"user": ["a", "b", "a"], "ts": [at(100), at(100), at(90_000)],
                            "label": [0, 0, 1]})
    event = store.as_of("f", samples, time="ts")
    assert event["x"].tolist() == [2.0, 5.0, 2.0]  # visible in event-time mode
    leak = check_leakage(event, "f__ingest_time", "ts")
    assert not leak.ok and int(leak.summary.iloc[0]["leaks"]) == 1
    known = store.as_of("f", samples.assign(cut=samples["ts"]), time="ts", known_at="cut")
    assert known["x"].tolist() == [1.0, 5.0, 2.0]  # caught: what was known then
    assert check_leakage(known, "f__ingest_time", "ts").ok
    assert known.attrs["ultron"]["tables"]["f"]["known_time_fallback"] == 1
    assert known["cut"].dtype == known["ts"].dtype == known["f__ingest_time"].dtype
    scalar = store.as_of("f", samples, time="ts", known_at="2024-03-01 00:00:10")
    assert scalar["x"].tolist() == [1.0, 5.0, 1.0]  # known_at == ingest: inclusive
    assert store.as_of("f", samples, time="ts", known_at=at(9))["x"].isna().all()


def test_known_time_mode_against_the_oracle(store) -> None:
    oracle = Oracle()
    write_all(store, oracle, dirty_writes(8, writes=3))
    samples = samples_frame(9)
    rng = np.random.default_rng(10)
    samples["cut"] = [None if t is None else t + timedelta(seconds=int(s))
                      for t, s in zip(samples["ts"], rng.integers(-300, 300, len(samples)),
                                      strict=True)]
    got = store.as_of("f", samples, time="ts", known_at="cut")
    assert_matches(got, samples, oracle, known="cut")
    assert got.attrs["ultron"]["tables"]["f"]["known_time_fallback"] > 50
    limited = store.as_of("f", samples, time="ts", known_at="cut", ttl="300s")
    assert_matches(limited, samples, oracle, known="cut", ttl=timedelta(seconds=300))


def test_ties_are_inclusive_and_samples_before_the_first_version_get_nulls(store) -> None:
    store.write("f", pd.DataFrame({"user": ["a", "a"], "vt": [at(10), at(20)],
                                   "x": [1.0, 2.0], "n": [1, 2]}), "user", "vt")
    samples = pd.DataFrame({"user": ["a", "a", "a", "a", None, "zz"],
                            "ts": [at(9.999999), at(10), at(19), at(20), at(20), at(20)],
                            "label": range(6)})
    got = store.as_of("f", samples, time="ts")
    assert pd.isna(got["x"][0]) and got["x"].tolist()[1:4] == [1.0, 1.0, 2.0]
    assert got["x"][4:].isna().all()


def test_ttl_per_table_and_several_tables_with_a_feature_subset(store) -> None:
    store.write("f", pd.DataFrame({"user": ["a", "a"], "vt": [at(0), at(100)],
                                   "x": [1.0, 2.0], "n": [1, 2]}), "user", "vt")
    store.write("g", pd.DataFrame({"item": ["i1"], "vt": [at(0)], "x": [9.0],
                                   "score": [0.5]}), "item", "vt")
    samples = pd.DataFrame({"user": ["a", "a", "a"], "item": ["i1", "i1", "i2"],
                            "ts": [at(50), at(160), at(161)], "label": [0, 1, 2]})
    got = store.as_of(["f:x", "g"], samples, time="ts", ttl={"f": "60s"})
    assert got.columns.tolist() == ["user", "item", "ts", "label", "f__x", "f__version_time",
                                    "f__ingest_time", "g__x", "score", "g__version_time",
                                    "g__ingest_time"]
    assert got["f__x"].tolist()[:2] == [1.0, 2.0] and pd.isna(got["f__x"][2])  # 61 s > 60 s
    assert got["g__x"].tolist()[:2] == [9.0, 9.0] and pd.isna(got["g__x"][2])
    assert got.attrs["ultron"]["tables"]["f"]["expired"] == 1
    one = store.as_of("f", samples, time="ts", ttl="50s")  # an age of exactly 50 s matches
    assert one["x"][0] == 1.0 and one["x"][1:].isna().all()
    with pytest.raises(ConfigError, match="has no feature 'nope'"):
        store.as_of("f:nope", samples, time="ts")
    with pytest.raises(ConfigError, match="cannot parse 'soon' as a duration"):
        store.as_of("f", samples, time="ts", ttl="soon")


def test_one_time_rule_for_aware_naive_string_and_epoch_inputs(store) -> None:
    vts = pd.to_datetime(["2024-03-01 10:00", "2024-03-01 11:00"])
    store.write("f", pd.DataFrame({"user": ["a", "a"], "vt": vts.tz_localize("Europe/Paris"),
                                   "x": [1.0, 2.0], "n": [1, 2]}), "user", "vt")  # 09:00, 10:00Z
    utc = pd.to_datetime(["2024-03-01 09:30", "2024-03-01 10:00", "2024-03-01 08:59"])
    forms = {
        "naive": utc,
        "aware": utc.tz_localize("UTC").tz_convert("America/New_York"),
        "string": [t.strftime("%Y-%m-%dT%H:%M:%S+00:00") for t in utc],
        "epoch_ms": (utc.asi8 // 1_000_000).astype("int64"),
        "epoch_s": utc.asi8 / 1e9,
    }
    results = {}
    for name, ts in forms.items():
        samples = pd.DataFrame({"user": ["a"] * 3, "ts": ts, "label": range(3)})
        before = samples.copy()
        unit = {"epoch_ms": "ms", "epoch_s": "s"}.get(name)
        got = store.as_of("f", samples, time="ts", unit=unit)
        pd.testing.assert_frame_equal(samples, before)  # the caller's frame is not changed
        assert str(got["ts"].dtype) == str(got["f__version_time"].dtype) == \
            "datetime64[us, UTC]", name
        assert (got["f__version_time"].dropna() <= got["ts"][got["x"].notna()]).all()
        results[name] = got
    for name, got in results.items():
        pd.testing.assert_frame_equal(got.drop(columns="ts"),
                                      results["naive"].drop(columns="ts"), obj=name)
        assert got["ts"].tolist() == results["naive"]["ts"].tolist(), name
    assert results["naive"]["x"].tolist()[:2] == [1.0, 2.0]
    assert results["naive"].attrs["ultron"]["naive_times_taken_as_utc"] == ["ts"]
    assert results["aware"].attrs["ultron"]["naive_times_taken_as_utc"] == []
    with pytest.raises(DataError, match="epoch numbers need a unit"):
        store.as_of("f", pd.DataFrame({"user": ["a"], "ts": [1709287200]}), time="ts")


def test_randomised_writes_and_lookups_against_the_oracle(store) -> None:
    oracle = Oracle()
    write_all(store, oracle, dirty_writes(11, keys=8, writes=5, per_write=60), ingest=None)
    samples = samples_frame(12, n=400, keys=10)
    assert_matches(store.as_of("f", samples, time="ts"), samples, oracle)
    assert_matches(store.as_of("f", samples, time="ts", ttl="400s"), samples, oracle,
                   ttl=timedelta(seconds=400))


def test_empty_samples_and_mistakes_are_one_line_errors(store) -> None:
    store.write("f", pd.DataFrame({"user": ["a"], "vt": [at(0)], "x": [1.0], "n": [1]}),
                "user", "vt")
    empty = pd.DataFrame({"user": pd.Series([], dtype=object),
                          "ts": pd.Series([], dtype="datetime64[ns]")})
    got = store.as_of("f", empty, time="ts")
    assert len(got) == 0 and got.columns.tolist() == ["user", "ts", "x", "n",
                                                       "f__version_time", "f__ingest_time"]
    one = pd.DataFrame({"user": ["a"], "ts": [at(1)]})
    with pytest.raises(ConfigError, match="'nope' is neither a samples column nor a time"):
        store.as_of("f", one, time="ts", known_at="nope")
    with pytest.raises(ConfigError, match="ttl: 'g' is not one of the tables looked up"):
        store.as_of("f", one, time="ts", ttl={"g": "1h"})
    with pytest.raises(DataError, match="samples: no column 'when'"):
        store.as_of("f", one, time="when")
    with pytest.raises(DataError, match="as_of 'f': Conversion Error"):
        store.as_of("f", pd.DataFrame({"user": [1], "ts": [at(1)]}), time="ts")
    with pytest.raises(ConfigError, match="output: 'polars'"):
        store.as_of("f", one, time="ts", output="polars")
