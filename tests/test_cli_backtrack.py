"""The backtrack and features commands of the ``ultron`` CLI, run as real processes: help,
exit statuses of failing checks, --plan, history on S3 (moto), the feature-store verbs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tests.support.s3 import KEY, SECRET
from tests.test_cli import BIN


def ultron(cwd: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env, stdin=subprocess.DEVNULL)

HOURS = ("--from", "2024-03-01", "--to", "2024-03-01 03:00")


def history(root: Path, hours: int = 2) -> None:
    for hour in range(hours):
        folder = root / "date=2024-03-01" / f"hour={hour:02d}"
        folder.mkdir(parents=True)
        frame = pd.DataFrame({"user_id": [f"u{i % 3}" for i in range(20)],
                              "ts": [pd.Timestamp("2024-03-01") + pd.Timedelta(
                                  hours=hour, minutes=59 - i) for i in range(20)]})
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                       folder / "part-0.parquet")


def test_help_of_the_sub_verbs(workdir: Path) -> None:
    r = ultron(workdir, "backtrack", "prepare", "--help")
    assert r.returncode == 0, r.stderr
    assert "--plan" in r.stdout and "--storage-option" in r.stdout and "missing_hour" in r.stdout
    r = ultron(workdir, "features", "as-of", "--help")
    assert r.returncode == 0 and "--known-at" in r.stdout and "--ttl" in r.stdout


def test_failing_checks_exit_non_zero(workdir: Path) -> None:
    history(workdir / "hist")
    r = ultron(workdir, "backtrack", "check", "source", "hist", "--key", "user_id", "--time",
               "ts", *HOURS)
    assert r.returncode == 1 and "missing_partition" in r.stdout  # hour 02 is missing
    r = ultron(workdir, "backtrack", "check", "source", "hist", "--key", "user_id", "--time",
               "ts", *HOURS, "--allow", "missing_hour")
    assert r.returncode == 0, r.stdout + r.stderr
    # The files are unordered inside: as a topic they are out of order; prepared, in order.
    r = ultron(workdir, "backtrack", "check", "order", "hist/date=2024-03-01/*/*.parquet",
               "--time", "ts")
    assert r.returncode == 1 and "out_of_order" in r.stdout
    r = ultron(workdir, "backtrack", "prepare", "hist", "--key", "user_id", "--time", "ts",
               "--partitions", "2", *HOURS, "--out", "topic", "--allow", "missing_hour")
    assert r.returncode == 0, r.stderr
    assert ultron(workdir, "backtrack", "check", "order", "topic").returncode == 0


def test_plan_before_any_work(workdir: Path) -> None:
    history(workdir / "hist", hours=3)
    r = ultron(workdir, "backtrack", "prepare", "hist", "--key", "user_id", "--time", "ts",
               "--partitions", "4", "--from", "2024-03-01 01:00", "--to", "2024-03-01 02:00",
               "--plan")
    assert r.returncode == 0, r.stderr
    assert "3 found, 1 in range, 2 pruned, 0 missing" in r.stdout
    assert "files: 1 of 3" in r.stdout and "rows: 20" in r.stdout and "memory: about" in r.stdout
    assert not (workdir / ".ultron" / "topics").exists()


def test_prepare_from_s3_with_credentials_from_the_environment(workdir: Path, s3_server
                                                               ) -> None:
    history(workdir / "hist", hours=3)
    fs = s3_server.filesystem()
    fs.mkdir("cli-hist")
    for path in sorted((workdir / "hist").rglob("*.parquet")):
        fs.put(str(path), f"cli-hist/h/{path.relative_to(workdir / 'hist').as_posix()}")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1"}
    args = ["backtrack", "prepare", "s3://cli-hist/h", "--key", "user_id", "--time", "ts",
            "--partitions", "2", *HOURS, "--out", "topic", "--storage-option",
            f"endpoint_url={s3_server.endpoint}"]
    plan = ultron(workdir, *args, "--plan", env=env)
    assert plan.returncode == 0, plan.stderr
    assert "3 found, 3 in range" in plan.stdout and "rows: 60" in plan.stdout
    done = ultron(workdir, *args, env=env)
    assert done.returncode == 0, done.stderr
    assert "60 rows in 2 partitions" in done.stdout
    shown = plan.stdout + plan.stderr + done.stdout + done.stderr + "".join(
        p.read_text() for p in (workdir / "topic").rglob("*") if p.is_file())
    assert SECRET not in shown and KEY not in shown


def test_feature_store_verbs(workdir: Path) -> None:
    pd.DataFrame({"user_id": ["u0", "u0", "u1"],
                  "vt": pd.to_datetime(["2024-03-01 00:10", "2024-03-01 00:40",
                                        "2024-03-01 00:20"]),
                  "ctr": [0.1, 0.4, 0.2]}).to_parquet(workdir / "feats.parquet")
    pd.DataFrame({"user_id": ["u0", "u1", "u2", "u0"],
                  "ts": pd.to_datetime(["2024-03-01 00:30", "2024-03-01 00:20",
                                        "2024-03-01 00:30", "2024-03-01 00:05"])}
                 ).to_parquet(workdir / "samples.parquet")
    r = ultron(workdir, "features", "write", "user_stats", "feats.parquet", "--key", "user_id",
               "--version-time", "vt")
    assert r.returncode == 0 and "stored 3 version(s)" in r.stdout, r.stderr
    assert "user_stats  user_id" in ultron(workdir, "features", "tables").stdout
    r = ultron(workdir, "features", "as-of", "user_stats:ctr", "--samples", "samples.parquet",
               "--time", "ts", "--out", "out/joined.parquet")
    assert r.returncode == 0 and "wrote 4 row(s)" in r.stdout, r.stderr
    joined = pd.read_parquet(workdir / "out" / "joined.parquet")
    assert joined["user_id"].tolist() == ["u0", "u1", "u2", "u0"]  # input order
    assert joined["ctr"].tolist()[:2] == [0.1, 0.2] and joined["ctr"][2:].isna().all()
    r = ultron(workdir, "features", "check", "leakage", "out/joined.parquet", "--time", "ts",
               "--feature-time", "user_stats__version_time")
    assert r.returncode == 0, r.stdout
    leaky = joined.assign(user_stats__version_time=joined["ts"] + pd.Timedelta(minutes=1))
    leaky.to_parquet(workdir / "leaky.parquet")
    r = ultron(workdir, "features", "check", "leakage", "leaky.parquet", "--time", "ts",
               "--feature-time", "user_stats__version_time")
    assert r.returncode == 1 and "leak" in r.stdout
    r = ultron(workdir, "features", "versions", "user_stats", "--key", "u0")
    assert r.returncode == 0 and r.stdout.count("u0") == 2
    r = ultron(workdir, "features", "as-of", "nope", "--samples", "samples.parquet", "--time",
               "ts")
    assert r.returncode == 2 and r.stderr.startswith("NotFoundError: feature table 'nope'")
