"""Reading node outputs: Flink's part files committed while a reader lists and reads them."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from ultron_nb.engines import outputs
from ultron_nb.engines.flink import ddl, restores


def test_a_part_file_committed_between_listing_and_reading_is_read_under_its_new_name(
    tmp_path: Path,
) -> None:
    """A checkpoint renames ``.part-X.inprogress.<uuid>`` to ``part-X`` at any moment; a
    preview that listed the in-progress name must still read its rows (issue 3's loss)."""
    out = ddl.output_folder(tmp_path / "inst")
    out.mkdir(parents=True)

    def rows(ids: list[int]) -> str:
        return "".join(json.dumps({"id": i}) + "\n" for i in ids)

    (out / "part-u1-0-0").write_text(rows([0, 1]))
    pending = out / ".part-u2-0-1.inprogress.0f3c9a7e-1b2d-4e5f-8a9b-0c1d2e3f4a5b"
    pending.write_text(rows([2, 3]) + '{"id": 4')  # the writer is mid-row
    listing = outputs.flink_files(tmp_path / "inst")
    assert [p.name for p in listing] == ["part-u1-0-0", pending.name]
    assert ddl.committed_name(pending) == out / "part-u2-0-1"

    # The checkpoint completes: the writer finishes the file and it is renamed.
    with pending.open("a") as fh:
        fh.write("}\n")
    pending.rename(out / "part-u2-0-1")
    assert [r["id"] for r in outputs.read_json_lines(listing, None)] == [0, 1, 2, 3, 4]
    names = [p.name for p in outputs.flink_files(tmp_path / "inst")]
    assert names == ["part-u1-0-0", "part-u2-0-1"]
    # Without the committed file either (a fresh start cleared the output): skipped.
    (out / "part-u2-0-1").unlink()
    assert [r["id"] for r in outputs.read_json_lines(listing, None)] == [0, 1]


def test_a_part_file_committed_between_the_two_listings_is_listed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = ddl.output_folder(tmp_path / "inst")
    out.mkdir(parents=True)
    pending = out / ".part-u1-0-0.inprogress.abc"
    pending.write_text('{"id": 0}\n')
    listed = ddl.in_progress_files

    def commit_right_after_listing(folder: Path) -> list[Path]:
        found = listed(folder)
        pending.rename(out / "part-u1-0-0")  # the checkpoint lands between the listings
        return found

    monkeypatch.setattr(ddl, "in_progress_files", commit_right_after_listing)
    files = outputs.flink_files(tmp_path / "inst")
    assert [p.name for p in files] == ["part-u1-0-0"]
    assert [r["id"] for r in outputs.read_json_lines(files, None)] == [0]


def test_part_files_a_failed_attempt_left_are_not_read_after_its_restart(
    tmp_path: Path,
) -> None:
    """After a restart from a checkpoint, the in-progress files the failed attempt opened
    after that checkpoint are never committed and the restarted attempt writes their rows
    again: a reader that shows in-progress rows skips them (the CTR link under a killed
    task manager read 340 impressions twice). The file the checkpoint resumes stays."""
    inst = tmp_path / "inst"
    out = ddl.output_folder(inst)
    out.mkdir(parents=True)
    acked_ms, restored_ms = 1_000_000, 1_005_000

    def part(name: str, ids: list[int], written_ms: int) -> Path:
        path = out / name
        path.write_text("".join(json.dumps({"id": i}) + "\n" for i in ids))
        os.utime(path, ns=(written_ms * 1_000_000, written_ms * 1_000_000))
        return path

    part("part-u-0-0", [0, 1], acked_ms - 3000)                     # committed before
    resumed = part(".part-u-0-1.inprogress.a", [2], acked_ms - 10)   # in the checkpoint
    part(".part-u-0-2.inprogress.b", [3, 4], acked_ms + 400)        # the failed attempt's
    part(".part-u-1-5.inprogress.c", [5], restored_ms - 1)          # (another subtask)
    part(".part-u-0-7.inprogress.d", [3, 4, 5], restored_ms + 800)  # the restarted one's
    rows = [r["id"] for r in outputs.read_json_lines(outputs.flink_files(inst), None)]
    assert sorted(rows) == [0, 1, 2, 3, 3, 4, 4, 5, 5]  # no restart known: read twice

    assert restores.record_restore(inst, restores.Restore("job", 7, acked_ms, restored_ms))
    assert not restores.record_restore(inst, restores.Restore("job", 7, acked_ms,
                                                              restored_ms))  # once
    names = [p.name for p in outputs.flink_files(inst)]
    assert names == ["part-u-0-0", resumed.name, ".part-u-0-7.inprogress.d"]
    rows = [r["id"] for r in outputs.read_json_lines(outputs.flink_files(inst), None)]
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    assert restores.last_restored_ms(inst, "job") == restored_ms
    assert restores.last_restored_ms(inst, "other") is None
    # The resumed file written again after the restore is still read.
    os.utime(resumed, ns=((restored_ms + 900) * 1_000_000,) * 2)
    assert resumed in outputs.flink_files(inst)


class _Checkpoints:
    """What Flink's ``GET /jobs/ID/checkpoints`` says the job last restored (a fake REST
    client for the bookkeeping's logic; the chaos tests use the real one)."""

    def __init__(self, restored: Any = None) -> None:
        self.restored = restored

    def restored_checkpoint(self, job_id: str) -> Any:
        return self.restored


def test_each_restart_from_a_checkpoint_is_recorded_once_and_savepoints_never(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    from types import SimpleNamespace

    from ultron_nb.engines.flink.rest import RestoredCheckpoint
    from ultron_nb.runners.flink_node import FlinkRunner

    runner = SimpleNamespace(ws=SimpleNamespace(instance_dir=lambda i: tmp_path / i))
    job = SimpleNamespace(external_id="j1", instance_id="inst")

    def note(rest: Any, restarting_ms: int | None) -> list[restores.Restore]:
        FlinkRunner._note_restart(runner, rest, job, restarting_ms)  # type: ignore[arg-type]
        return restores.restores(tmp_path / "inst")

    assert note(_Checkpoints(), None) == []  # never restored
    resumed = RestoredCheckpoint(3, 1000, 900, "file:/sp/savepoint-1", True)
    assert note(_Checkpoints(resumed), None) == []  # launched from a savepoint
    # A region restart (the job stays RUNNING: no RESTARTING time) is recorded, once.
    region = RestoredCheckpoint(7, 5000, 4200, "file:/cp/chk-7", False)
    assert note(_Checkpoints(region), None) == [restores.Restore("j1", 7, 4200, 5000)]
    assert len(note(_Checkpoints(region), None)) == 1
    # Flink's history no longer holds the checkpoint: recorded as hiding nothing, said once.
    gone = RestoredCheckpoint(9, 9000, None, "file:/nowhere/chk-9", False)
    with caplog.at_level(logging.WARNING):
        known = note(_Checkpoints(gone), 8000)
        note(_Checkpoints(gone), 8000)
    assert known[-1] == restores.Restore("j1", 9, 9000, 9000)
    assert not known[-1].hides(8999 * 1_000_000)
    assert sum("no longer describes" in r.getMessage() for r in caplog.records) == 1


def test_a_restart_before_any_checkpoint_hides_everything_written_before_it(
    tmp_path: Path,
) -> None:
    from types import SimpleNamespace

    from ultron_nb.runners.flink_node import FlinkRunner

    runner = SimpleNamespace(ws=SimpleNamespace(instance_dir=lambda i: tmp_path / i))
    job = SimpleNamespace(external_id="j1", instance_id="inst")
    FlinkRunner._note_restart(runner, _Checkpoints(), job, 7000)  # type: ignore[arg-type]
    FlinkRunner._note_restart(runner, _Checkpoints(), job, 7000)  # type: ignore[arg-type]
    known = restores.restores(tmp_path / "inst")
    assert known == [restores.Restore("j1", 0, 0, 7000)]
    assert known[0].hides(6999 * 1_000_000) and not known[0].hides(7001 * 1_000_000)


def test_a_checkpoint_on_this_machine_says_when_it_completed(tmp_path: Path) -> None:
    """The fallback when Flink's history no longer holds the restored checkpoint: its
    ``_metadata`` file's time, for a ``file:`` location or a path; None elsewhere."""
    chk = tmp_path / "chk 7"  # (a space: Flink writes such a location percent-encoded)
    chk.mkdir()
    (chk / "_metadata").write_bytes(b"x")
    os.utime(chk / "_metadata", ns=(1_700_000_000_123_000_000,) * 2)
    assert restores.written_ms(chk.as_uri()) == 1_700_000_000_123
    assert restores.written_ms(f"file:{chk}") == 1_700_000_000_123
    assert restores.written_ms(str(chk)) == 1_700_000_000_123
    assert restores.written_ms("hdfs://nn/checkpoints/chk-7") is None
    assert restores.written_ms((tmp_path / "gone").as_uri()) is None
