"""The backtrack service API: prepare with settings, check_source, checks, light imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ultron_nb.config import load_settings
from ultron_nb.errors import DataError
from ultron_nb.services import backtrack
from ultron_nb.services.features import open_feature_store

ROOT = Path(__file__).resolve().parents[2]


def make_history(root: Path, hours: int = 2, per_hour: int = 50, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for hour in range(hours):
        folder = root / "date=2024-03-01" / f"hour={hour:02d}"
        folder.mkdir(parents=True)
        frame = pd.DataFrame({
            "user_id": [f"u{k}" for k in rng.integers(0, 8, per_hour)],
            "ts": pd.Timestamp("2024-03-01") + pd.Timedelta(hours=hour) + pd.to_timedelta(
                rng.integers(0, 3_600_000, per_hour), unit="ms"),
            "item_id": [f"i{k}" for k in rng.integers(0, 5, per_hour)],
        })
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                       folder / "part-0.parquet")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_prepare_defaults_to_the_workspace_home(workdir: Path) -> None:
    make_history(workdir / "hist")
    manifest = backtrack.prepare("hist", key="user_id", time="ts", partitions=2,
                                 start="2024-03-01", end="2024-03-01 02:00")
    home = load_settings().home
    assert Path(manifest.path) == home / "topics" / "hist"
    assert manifest.rows == 100
    assert backtrack.read_manifest(manifest.path) == manifest
    assert backtrack.check_order(manifest.path).ok


def test_check_source_reports_without_writing(workdir: Path) -> None:
    make_history(workdir / "hist")
    report = backtrack.check_source("hist", key="user_id", time="ts", start="2024-03-01",
                                    end="2024-03-01 03:00")
    assert not report.ok
    assert list(report.errors["kind"]) == ["missing_partition"]
    assert "hour=02" in report.message()
    with pytest.raises(DataError, match="missing_partition"):
        report.raise_for_errors()
    assert "<h4>source: 1 error(s)</h4>" in report._repr_html_()
    assert not (workdir / ".ultron" / "topics").exists()


def test_sample_generation_end_to_end_catches_an_injected_leak(workdir: Path) -> None:
    samples = make_history(workdir / "hist", hours=3, per_hour=200)
    manifest = backtrack.prepare("hist", key="user_id", time="ts", partitions=3,
                                 start="2024-03-01", end="2024-03-01 03:00", out="topic")
    replayed = pd.DataFrame(backtrack_rows(manifest.path))
    # A windowed feature computed over the replay: clicks per user per 30 minutes.
    replayed["ts"] = pd.to_datetime(replayed["ts"])
    feats = (replayed.assign(window_end=replayed["ts"].dt.floor("30min") + pd.Timedelta(
        minutes=30)).groupby(["user_id", "window_end"]).size().rename("clicks").reset_index())
    with open_feature_store() as store:
        store.write("user_clicks", feats, "user_id", "window_end")
        joined = store.as_of("user_clicks", samples, "user_id", "ts")
    assert backtrack.check_leakage(joined, "user_clicks__version_time", "ts").ok
    assert backtrack.check_version_consistency(
        feats.rename(columns={"window_end": "version_time"}), joined, key="user_id",
        sample_time="ts", version="user_clicks__version_time").ok
    # The classic mistake: joining on the window start, so a sample sees its own window.
    leaky = samples.assign(window_end=samples["ts"].dt.floor("30min") + pd.Timedelta(
        minutes=30)).merge(feats, on=["user_id", "window_end"], how="left")
    result = backtrack.check_leakage(leaky, "window_end", "ts", key="user_id")
    assert not result.ok and result.summary.iloc[0]["leaks"] == len(leaky)
    # Replayed vs "live" (here: the same rows computed from the source) agree.
    live = feats.copy()
    assert backtrack.check_consistency(feats, live, key="user_id", time="window_end").ok


def backtrack_rows(path: str) -> list[dict]:
    from ultron_nb.engines.topics import LocalTopic

    return LocalTopic.open(path).read()


def test_importing_the_services_does_not_import_duckdb_or_pandas() -> None:
    code = ("import sys, ultron_nb.services.backtrack, ultron_nb.services.features;"
            "print(sorted(m for m in ('duckdb', 'pandas', 'numpy', 'pyarrow') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=ROOT).stdout.strip()
    assert out == "[]"
