"""Files and folders that only their owner may read: the home, the metadata store, logs.

The home (``.ultron``) holds the store, the logs of every run and the data of local topics;
a new home is created ``0700`` and the files that may hold what a user typed (the store,
logs) ``0600``, whatever the process's umask.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Create ``path`` (and missing parents, as usual) with the leaf readable by its owner
    only. An existing folder is left as it is unless ``tighten`` (then, if this user owns it,
    its group and other permissions are removed)."""
    path = Path(path)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=DIR_MODE)
        _chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask
    elif tighten:
        _restrict(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists (empty when new) and only its owner may read it."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _restrict(path, FILE_MODE)
        return path
    os.close(fd)
    _chmod(path, FILE_MODE)
    return path


def open_private(path: Path, mode: str = "ab") -> int:
    """An OS-level descriptor of ``path`` opened for appending, created ``0600``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & FILE_MODE)
    return fd


def _restrict(path: Path, allowed: int) -> None:
    """Drop the permission bits beyond ``allowed`` of a path this user owns."""
    with contextlib.suppress(OSError):
        info = path.stat()
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & ~allowed:
            path.chmod(stat.S_IMODE(info.st_mode) & allowed)


def _chmod(path: Path, mode: int) -> None:
    with contextlib.suppress(OSError):
        path.chmod(mode)
