"""History from where it lives: S3 on a real S3-compatible server (moto on 127.0.0.1), the
fsspec plumbing on local filesystems, the plan, and credentials never shown or stored."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd
import pytest

from tests.engines.test_duckdb_prepare import END, START, clicks, write_hour
from tests.support.s3 import KEY, SECRET
from ultron_nb.engines.duckdb.connection import connect
from ultron_nb.engines.duckdb.plan import plan_prepare
from ultron_nb.engines.duckdb.prepare import prepare_topic
from ultron_nb.engines.duckdb.remote import mask
from ultron_nb.engines.duckdb.sources import inspect_source
from ultron_nb.errors import ConfigError


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """Three hours (two unordered files each) and a fourth hour outside the range."""
    root = tmp_path / "hist"
    frames = []
    for hour in range(4):
        parts = [clicks(hour, 50, seed=hour * 10 + i) for i in range(2)]
        write_hour(root, hour, parts)
        frames.extend(parts if hour < 3 else [])
    return root, pd.concat(frames, ignore_index=True)


def segments(out: Path) -> dict[str, str]:
    """The partition files' digests (the manifest names the source, so it differs)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*.jsonl"))}


def upload(s3_server, root: Path, bucket: str) -> None:
    fs = s3_server.filesystem()
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    for path in sorted(root.rglob("*.parquet")):
        fs.put(str(path), f"{bucket}/hist/{path.relative_to(root).as_posix()}")


def test_prepare_from_s3_equals_the_local_preparation(s3_server, history, tmp_path: Path,
                                                       caplog) -> None:
    root, expected = history
    upload(s3_server, root, "bt-prepare")
    local = prepare_topic(root, key="user_id", time="ts", partitions=3, start=START, end=END,
                          out=tmp_path / "local")
    caplog.set_level(logging.DEBUG, logger="ultron_nb")
    remote = prepare_topic("s3://bt-prepare/hist", key="user_id", time="ts", partitions=3,
                           start=START, end=END, out=tmp_path / "remote",
                           storage_options=s3_server.options())
    assert remote.rows == local.rows == len(expected) == 300
    assert remote.counts == local.counts
    assert segments(tmp_path / "remote") == segments(tmp_path / "local")
    assert remote.source == "s3://bt-prepare/hist"
    assert remote.files[0].path.startswith("s3://bt-prepare/hist/date=2024-03-01/")
    written = "".join(p.read_text() for p in (tmp_path / "remote").rglob("*") if p.is_file())
    assert SECRET not in written and KEY not in written
    assert SECRET not in caplog.text


def test_check_source_and_plan_on_s3(s3_server, history) -> None:
    root, _ = history
    upload(s3_server, root, "bt-plan")
    con = connect()
    try:
        report = inspect_source(con, "s3://bt-plan/hist", key=["user_id"], time="ts",
                                start=START, end="2024-03-01 05:00", allow=["missing_hour"],
                                storage_options=s3_server.options()).report
        assert report.ok and list(report.problems["kind"]) == ["missing_partition"]
        assert report.problems.iloc[0]["severity"] == "warning"
        plan = plan_prepare(con, "s3://bt-plan/hist", start=START, end=END, partitions=4,
                            storage_options=s3_server.options())
    finally:
        con.close()
    fs = s3_server.filesystem()
    in_range = [p for p in fs.find("bt-plan/hist") if "hour=03" not in p]
    assert (plan.partitions_found, plan.partitions_in_range, plan.partitions_pruned) == (4, 3,
                                                                                          1)
    assert (plan.files_found, plan.files, plan.rows) == (8, 6, 300)
    assert plan.bytes == sum(fs.size(p) for p in in_range)
    assert SECRET not in str(plan) and SECRET not in str(plan.to_dict())


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_fsspec_plumbing_on_local_filesystems(scheme: str, history, tmp_path: Path) -> None:
    import fsspec

    root, _ = history
    if scheme == "file":
        url = f"file://{root}"
    else:
        fs = fsspec.filesystem("memory")
        for path in sorted(root.rglob("*.parquet")):
            fs.put(str(path), f"/bt/hist/{path.relative_to(root).as_posix()}")
        url = "memory://bt/hist"
    local = prepare_topic(root, key="user_id", time="ts", partitions=2, start=START, end=END,
                          out=tmp_path / "local")
    through = prepare_topic(url, key="user_id", time="ts", partitions=2, start=START, end=END,
                            out=tmp_path / scheme)
    assert through.rows == local.rows == 300
    assert segments(tmp_path / scheme) == segments(tmp_path / "local")
    assert all(f.path.startswith(f"{scheme}://") for f in through.files)


def test_plan_of_a_local_source_reads_only_listings_and_footers(history) -> None:
    root, _ = history
    con = connect()
    try:
        plan = plan_prepare(con, root, start=START, end="2024-03-01 05:00", partitions=4)
    finally:
        con.close()
    files = sorted(root.rglob("*.parquet"))
    assert (plan.partitions_found, plan.partitions_in_range) == (4, 4)
    assert plan.partitions_missing == ("date=2024-03-01/hour=04",)
    assert (plan.files, plan.rows, plan.bytes) == (8, 400, sum(p.stat().st_size for p in files))
    assert plan.memory_estimate > plan.staged_bytes > 0
    text = str(plan)
    assert "4 found, 4 in range, 0 pruned, 1 missing (date=2024-03-01/hour=04)" in text
    assert "files: 8 of 8" in text and "rows: 400" in text


def test_credentials_are_masked_in_urls_and_unknown_schemes_are_refused(tmp_path) -> None:
    assert mask("webhdfs://alice:hunter2@nn:9870/hist") == "webhdfs://alice:***@nn:9870/hist"
    assert mask("s3://b/k?X-Amz-Signature=abc&part=1") == "s3://b/k?X-Amz-Signature=***&part=1"
    assert mask("hdfs://nn:8020/hist/date=2024-03-01") == "hdfs://nn:8020/hist/date=2024-03-01"
    con = connect()
    try:
        with pytest.raises(ConfigError, match=r"no filesystem for nosuch://"):
            inspect_source(con, "nosuch://x:secret@h/hist", key=["k"], time="ts",
                           start=START, end=END)
        with pytest.raises(ConfigError, match="storage options are for remote history"):
            inspect_source(con, tmp_path, key=["k"], time="ts", start=START, end=END,
                           storage_options={"key": "x"})
    finally:
        con.close()
