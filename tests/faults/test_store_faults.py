"""Faults of the machine under the store (issue 14, items 3 and 4): a read-only store and a
full disk, on real small file systems (tmpfs), through the real CLI, the real magic and the
real scheduler daemon.

- Read-only: reading verbs work; writing verbs fail in one line naming the file; the store is
  unchanged.
- Full disk: one line naming the store; the running scheduler logs the failure once (not every
  second) and recovers when space frees — the trigger of the event it could not commit runs,
  once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.faults import magic_line, one_line, row_hashes, table_rows, ultron
from tests.support.waiting import wait_until
from ultron_nb.config import Settings
from ultron_nb.scheduler import daemon_status, start_daemon, stop_daemon

pytestmark = pytest.mark.slow


def _mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}): the "
                    "read-only and full-disk tests need a small file system of their own")


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)
    subprocess.run(["umount", "-l", str(path)], capture_output=True)  # if something held it


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 2 MB tmpfs, the working directory (its ``.ultron`` is the home)."""
    disk = tmp_path / "disk"
    _mount(disk, "2m")
    monkeypatch.chdir(disk)
    for var in ("ULTRON_HOME", "ULTRON_DB_URL", "ULTRON_FLINK_URL"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield disk
    finally:
        pid = daemon_status(Settings(home=disk / ".ultron"))
        if pid and pid > 0:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        monkeypatch.chdir(tmp_path)
        _umount(disk)


def _fill(disk: Path) -> Path:
    """Write zeros until the disk is full; the file that holds them."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    try:
        while True:  # the last pages
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    os.close(fd)
    return filler


def _reserve(path: Path, size: int) -> None:
    """Reserve ``size`` bytes of disk for appends to ``path`` (fallocate KEEP_SIZE), so the
    daemon's log can still be written on the full disk — what it says is what we test."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(size)) != 0:
            pytest.skip(f"fallocate(KEEP_SIZE) refused: errno {ctypes.get_errno()}")
    finally:
        os.close(fd)


# ---------------------------------------------------------------- item 3: read-only
def test_a_read_only_store_reads_and_refuses_writes_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ip: Any,
) -> None:
    disk = tmp_path / "ro"
    _mount(disk, "16m")
    try:
        for args, body in ((["node", "imps", "--flow", "f", "--kind", "topic", "--time", "ts"],
                            "imp_id BIGINT, ts TIMESTAMP(3)"),
                           (["node", "q", "--flow", "f"], "SELECT imp_id FROM imps"),
                           (["send", "model/ctr", '{"auc": 0.7}'], "")):
            r = ultron(disk, *args, stdin=body)
            assert r.returncode == 0, r.stderr
        store = disk / ".ultron" / "ultron.db"
        before = row_hashes(store)
        done = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr

        # Reading verbs work (CLI).
        r = ultron(disk, "flows")
        assert r.returncode == 0 and "f     2" in r.stdout, r.stderr
        r = ultron(disk, "nodes", "f")
        assert r.returncode == 0 and "imps" in r.stdout and "q" in r.stdout, r.stderr
        r = ultron(disk, "history", "f")
        assert r.returncode == 0 and "define q" in r.stdout, r.stderr
        r = ultron(disk, "show", "f", "--format", "dot")
        assert r.returncode == 0 and '"imps" -> "q"' in r.stdout, r.stderr
        r = ultron(disk, "events")
        assert r.returncode == 0 and "model/ctr" in r.stdout, r.stderr
        r = ultron(disk, "experiments")
        assert r.returncode == 0, r.stderr
        # Writing verbs: one line naming the file.
        for args, body in ((["node", "x", "--flow", "f", "--kind", "topic"], "a STRING"),
                           (["rm", "q", "--flow", "f"], ""),
                           (["send", "model/ctr", "1"], ""),
                           (["run", "--flow", "f"], "")):
            one_line(ultron(disk, *args, stdin=body), str(store), "read-only",
                     error="StoreError")

        # The magic, in the same store.
        monkeypatch.chdir(disk)
        assert "imps" in str(ip.run_cell("%ultron nodes f").result)
        line = magic_line(ip, "node x --flow f --kind topic", "a STRING")
        assert line.startswith("StoreError: ") and str(store) in line and "read-only" in line
        line = magic_line(ip, "send model/ctr 2")
        assert line.startswith("StoreError: ") and str(store) in line
        assert row_hashes(store) == before
    finally:
        monkeypatch.chdir(tmp_path)
        _umount(disk)


# ---------------------------------------------------------------- item 4: full disk
DUCKDB_ON_EVENT = "SELECT 42 AS answer"


def _caught_up(store: Path) -> bool:
    """Has the scheduler committed its cursor past every event in the store?"""
    import json

    rows = table_rows(store)
    last = max((e[0] for e in rows["events"]), default=0)
    state = [json.loads(r[1]) if isinstance(r[1], str) else r[1]
             for r in rows["scheduler_state"] if r[0] == "scheduler"]
    return bool(state) and int(state[0].get("cursor", 0)) >= last > 0


def test_a_full_disk_is_one_line_and_the_scheduler_says_it_once_then_recovers(
    small_disk: Path, ip: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    disk = small_disk
    monkeypatch.chdir(disk)  # the magic's store is the one on the small disk
    home = disk / ".ultron"
    r = ultron(disk, "node", "answer", "--flow", "f", "--kind", "duckdb", "--on-event",
               "model/new", stdin=DUCKDB_ON_EVENT)
    assert r.returncode == 0, r.stderr
    settings = Settings(home=home)
    pid = start_daemon(settings)
    log = home / "logs" / "scheduler.log"
    wait_until(lambda: log.is_file() and "running for" in log.read_text(), 60,
               "the scheduler to run")
    r = ultron(disk, "run", "--flow", "f", "--name", "e1", "--no-wait")
    assert r.returncode == 0, r.stderr
    store = home / "ultron.db"
    wait_until(lambda: _caught_up(store), 60, "the scheduler to read the launch")
    _reserve(log, 256 * 1024)

    # The event arrives while the scheduler is paused; then the disk fills up.
    os.kill(pid, signal.SIGSTOP)
    try:
        r = ultron(disk, "send", "model/new", "1")
        assert r.returncode == 0, r.stderr
        filler = _fill(disk)
    finally:
        os.kill(pid, signal.SIGCONT)
    before = row_hashes(store)

    for args, body in ((["node", "q", "--flow", "f", "--kind", "duckdb"], "SELECT 1 AS one"),
                       (["send", "model/new", "2"], ""),
                       (["run", "--flow", "f", "--name", "e2"], "")):
        one_line(ultron(disk, *args, stdin=body), str(store), "no space left",
                 error="StoreError")
    line = magic_line(ip, "node q --flow f --kind duckdb", "SELECT 1 AS one")
    assert line.startswith("StoreError: ") and "no space left" in line and str(store) in line
    r = ultron(disk, "flows")  # reading still works
    assert r.returncode == 0 and "f     1" in r.stdout, r.stderr

    # The scheduler cannot commit the event's trigger: it says so ONCE while it retries.
    full = "no space left on the disk holding the metadata store"
    wait_until(lambda: full in log.read_text(), 30, "the scheduler to notice the full disk")
    assert row_hashes(store) == before  # nothing half-written

    # The disk stays full for a few of the scheduler's one-second retries (the duration is
    # the input here, not a synchronisation: there is nothing to await while it fails).
    time.sleep(2.5)
    # Space frees: it recovers, says so once, and the trigger runs exactly once.
    filler.unlink()
    recovered = wait_until(lambda: "recovered after" in log.read_text() and log.read_text(),
                           60, "the scheduler to recover")
    assert recovered.count(full) == recovered.count("scheduler step failed") == 1, \
        recovered[-2000:]
    attempts = int(recovered.split("recovered after ")[1].split(" ")[0])
    assert attempts >= 2  # it retried while the disk was full — and logged it once

    def finished() -> Any:
        r = ultron(disk, "status", "e1")
        return r.returncode == 0 and "finished" in r.stdout and r.stdout
    wait_until(finished, 120, "the DuckDB node to run after the recovery")
    jobs = table_rows(store)["jobs"]
    assert [(j[2], j[5]) for j in jobs] == [("duckdb", "finished")]  # one run, not two
    out = next((home / "topics").glob("answer_*/data.parquet"))
    import pandas as pd

    assert pd.read_parquet(out).answer.tolist() == [42]
    stop_daemon(settings)
