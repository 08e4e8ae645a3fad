"""The as-of merge (:mod:`ultron_nb.engines.duckdb.features.merge`) against a brute-force scan,
in both of its packings, and through the store on a table whose time range forces the rank
packing (versions centuries apart, many keys) with NULL sample times."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.pit_oracle import Oracle
from ultron_nb.engines.duckdb.features import DuckDBFeatureStore
from ultron_nb.engines.duckdb.features.merge import asof, packing


def brute(code: np.ndarray, vt: np.ndarray, q_code: np.ndarray, q_t: np.ndarray,
          valid: np.ndarray) -> np.ndarray:
    out = np.full(len(q_code), -1, dtype=np.int64)
    for i in range(len(q_code)):
        if not valid[i]:
            continue
        rows = np.flatnonzero((code == q_code[i]) & (vt <= q_t[i]))
        if len(rows):
            out[i] = rows[np.argmax(vt[rows])]
    return out


@pytest.mark.parametrize("spread", [10**6, 2**61], ids=["offset", "rank"])
def test_merge_equals_a_brute_force_scan(spread: int) -> None:
    rng = np.random.default_rng(spread % 97)
    pairs = {(int(c), int(v)) for c, v in zip(rng.integers(0, 40, 3000),
                                              rng.integers(-spread // 2, spread // 2, 3000),
                                              strict=True)}
    code = np.array([c for c, _ in pairs], dtype=np.int64)
    vt = np.array([v for _, v in pairs], dtype=np.int64)
    pack = packing(code, vt)
    assert (pack.times is None) == (spread == 10**6)
    order = np.argsort(pack.index_keys(code, vt))  # how the store orders its index
    code, vt = code[order], vt[order]
    assert all((code[i], vt[i]) < (code[i + 1], vt[i + 1]) for i in range(len(code) - 1))
    keys = pack.index_keys(code, vt)
    q_code = rng.integers(-1, 45, 5000)  # -1: no key; 40..44: codes without versions
    q_t = np.concatenate([rng.choice(vt, 1000),  # exact ties
                          rng.integers(-spread, spread, 4000)])  # some outside the range
    valid = (q_code >= 0) & (rng.random(5000) > 0.02)
    got = asof(keys, pack, q_code, q_t, valid)
    np.testing.assert_array_equal(got, brute(code, vt, q_code, q_t, valid))


def test_the_store_with_versions_centuries_apart_against_the_oracle(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    oracle = Oracle()
    years = [1700, 1900, 2024, 2400]
    with DuckDBFeatureStore(tmp_path / "features") as store:
        for _ in range(2):
            rows = [{"user": f"u{int(k):03d}", "vt": datetime(int(rng.choice(years)), 1, 1)
                     + timedelta(seconds=int(rng.integers(0, 10**6))),
                     "x": float(rng.random())} for k in rng.integers(0, 300, 1500)]
            store.write("f", pd.DataFrame(rows), "user", "vt")
            oracle.write(rows, "user", "vt")
        live = store._ready("f", store._con.cursor()).sorted_live()
        assert live["packing"].times is not None  # the rank packing is the one under test
        users = [f"u{int(k):03d}" for k in rng.integers(0, 320, 800)]
        ts: list[datetime | None] = [datetime(int(rng.choice(years)), 1, 1) + timedelta(
            seconds=int(s)) for s in rng.integers(-10**5, 2 * 10**6, 800)]
        ts[:7] = [None] * 7
        samples = pd.DataFrame({"user": users, "ts": pd.Series(ts, dtype="datetime64[us]")})
        got = store.as_of("f", samples, time="ts")
    assert len(got) == len(samples) and got["user"].tolist() == users
    for i, row in enumerate(got.itertuples(index=False)):
        want = oracle.lookup(users[i], ts[i])
        vt = row.f__version_time
        if want is None:
            assert pd.isna(vt) and pd.isna(row.x), (i, users[i], ts[i])
        else:
            assert pd.Timestamp(vt).tz_convert("UTC").tz_localize(None) == want.version_time
            assert row.x == want.values["x"], (i, users[i], ts[i])
