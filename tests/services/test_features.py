"""The feature-store service: the interface, the default location, lookups."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import pandas as pd

from ultron_nb.config import load_settings
from ultron_nb.services.features import FeatureStore, open_feature_store


def test_default_store_lives_under_the_workspace_home(workdir: Path) -> None:
    with open_feature_store() as store:
        assert isinstance(store, FeatureStore)
        assert store.root == load_settings().home / "features"
        store.write("f", pd.DataFrame({"k": ["a"], "vt": [pd.Timestamp("2024-03-01")],
                                       "x": [1]}), "k", "vt")
        assert (store.root / "f" / "_table.json").is_file()
        assert store.tables() == ["f"]


def test_preload_then_as_of(workdir: Path) -> None:
    versions = pd.DataFrame({"k": ["a", "a", "b"],
                             "vt": pd.to_datetime(["2024-03-01 01:00", "2024-03-01 03:00",
                                                   "2024-03-01 02:00"]),
                             "x": [1, 3, 2]})
    samples = pd.DataFrame({"k": ["a", "a", "b", "b"],
                            "ts": pd.to_datetime(["2024-03-01 02:59", "2024-03-01 03:00",
                                                  "2024-03-01 01:59", "2024-03-01 02:00"])})
    with open_feature_store(root=workdir / "fs") as store:
        store.write("f", versions, "k", "vt")
        handle = store.preload("f")
        assert isinstance(handle, Future)
        got = store.as_of("f", samples, "k", "ts")  # always in input order
        assert handle.done()
    assert got["x"].tolist()[:2] == [1, 3]
    assert pd.isna(got["x"].tolist()[2]) and got["x"].tolist()[3] == 2
