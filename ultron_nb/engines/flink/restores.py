"""What a job's restarts leave behind in its sink directory, and how readers skip it.

When Flink restarts a job from a checkpoint (a task manager died, a task failed), the
filesystem sink resumes the part file it was writing at that checkpoint (cut back to the
checkpointed length) and commits the files the checkpoint held. The part files the failed
attempt opened *after* that checkpoint are never committed and never deleted: they stay as
``.part-….inprogress.…`` files, and the restarted attempt writes the same rows again into
new ones. A reader that shows in-progress rows (previews, tails, Python and DuckDB nodes that
read up to the watermark) must skip those orphans, or it reads every row of them twice.

Each restart is recorded in the node instance's directory (``_restores.json``) with the time
the restored checkpoint was acknowledged and the time Flink restored it. An in-progress file
last written between the two belongs to the failed attempt: the resumed file was last
written at or before the checkpoint (its snapshot flushed it) or is written again after the
restore, and every file of the restarted attempt is written after the restore.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ultron_nb.urls import local_path

log = logging.getLogger(__name__)

#: The restarts of a node instance's jobs, in its directory.
RESTORES_FILE = "_restores.json"


@dataclass(frozen=True)
class Restore:
    """One restart of a job from a checkpoint (times in epoch ms, the cluster's clock)."""

    job_id: str
    checkpoint: int
    acked_ms: int     # the restored checkpoint's last acknowledgement
    restored_ms: int  # when Flink restored it (the failed attempt's tasks were gone)

    def hides(self, mtime_ns: int) -> bool:
        """Whether a part file last written at ``mtime_ns`` is the failed attempt's."""
        # (a millisecond of slack: the resumed file's flush and the acknowledgement can fall
        # in the same millisecond)
        return (self.acked_ms + 1) * 1_000_000 < mtime_ns < self.restored_ms * 1_000_000


def restores(instance_dir: Path) -> list[Restore]:
    """The restarts recorded for ``instance_dir`` (oldest first)."""
    path = instance_dir / RESTORES_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s); orphaned part files are not skipped", path, exc)
        return []
    return [Restore(**item) for item in data]


def record_restore(instance_dir: Path, restore: Restore) -> bool:
    """Add ``restore`` to the instance's restarts; False when it was recorded already."""
    known = restores(instance_dir)
    if any(r.job_id == restore.job_id and r.restored_ms == restore.restored_ms
           for r in known):
        return False
    instance_dir.mkdir(parents=True, exist_ok=True)
    path = instance_dir / RESTORES_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps([asdict(r) for r in [*known, restore]], indent=1))
    os.replace(tmp, path)
    return True


def last_restored_ms(instance_dir: Path, job_id: str) -> int | None:
    """When the latest recorded restart of ``job_id`` was restored, if any."""
    times = [r.restored_ms for r in restores(instance_dir) if r.job_id == job_id]
    return max(times) if times else None


def written_ms(checkpoint_path: str) -> int | None:
    """When a checkpoint on the local file system was completed (its ``_metadata`` file,
    written after every acknowledgement), in epoch ms; None when it is not local or gone."""
    local = local_path(checkpoint_path)
    if local is None:
        return None
    try:
        return (local / "_metadata").stat().st_mtime_ns // 1_000_000
    except OSError:
        return None


def orphaned(mtime_ns: int, known: list[Restore]) -> bool:
    """Whether an in-progress part file last written at ``mtime_ns`` was left by a failed
    attempt of one of ``known`` restarts."""
    return any(r.hides(mtime_ns) for r in known)
