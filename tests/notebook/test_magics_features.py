"""%ultron backtrack and %ultron features in a real IPython shell: help lists the sub-verbs'
flags, a lookup returns a DataFrame in the samples' order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from IPython.core.error import UsageError


def test_help_lists_the_sub_verbs_flags(cell: Any) -> None:
    text = str(cell("%ultron help backtrack"))
    for flag in ("prepare", "--plan", "--storage-option", "--null-keys", "check", "run",
                 "--input"):
        assert flag in text, flag
    text = str(cell("%ultron help features"))
    for flag in ("write", "--ingest-time", "as-of", "--known-at", "--ttl", "versions",
                 "leakage"):
        assert flag in text, flag
    assert "features" in str(cell("%ultron help"))


def test_features_write_and_as_of_into_a_dataframe(cell: Any, workdir: Path) -> None:
    pd.DataFrame({"item_id": ["a", "a", "b"], "ts": pd.to_datetime(
        ["2024-03-01 01:00", "2024-03-01 02:00", "2024-03-01 01:00"]),
        "ctr": [0.1, 0.2, 0.9], "seen": pd.to_datetime(["2024-03-01 01:05", "2024-03-01 09:00",
                                                        "2024-03-01 01:05"])}
                 ).to_parquet(workdir / "f.parquet")
    pd.DataFrame({"item_id": ["b", "a", "a"], "t": pd.to_datetime(
        ["2024-03-01 03:00", "2024-03-01 03:00", "2024-03-01 00:30"])}
                 ).to_parquet(workdir / "s.parquet")
    written = cell("%ultron features write item_ctr f.parquet --key item_id --version-time ts "
                   "--ingest-time seen")
    assert written.versions == 3
    got = cell("%ultron features as-of item_ctr --samples s.parquet --time t")
    assert isinstance(got, pd.DataFrame)
    assert got["item_id"].tolist() == ["b", "a", "a"]
    assert got["ctr"].tolist()[:2] == [0.9, 0.2] and pd.isna(got["ctr"][2])
    known = cell("%ultron features as-of item_ctr --samples s.parquet --time t "
                 "--known-at t")
    assert known["ctr"].tolist()[:2] == [0.9, 0.1]  # 02:00's version was learnt at 09:00
    with pytest.raises(UsageError, match="NotFoundError: feature table 'nope'"):
        cell("%ultron features as-of nope --samples s.parquet --time t")
