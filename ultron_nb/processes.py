"""Is a process alive? By pid (Flink's daemons), or by an identity that survives pid reuse
(the scheduler's node runners, recorded in the store as ``pid:starttime@host``)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def start_time(pid: int) -> str | None:
    """The kernel's start time of process ``pid``: None if it is gone or a zombie, ``"?"``
    when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return "?"
    fields = stat.rsplit(")", 1)[-1].split()
    if fields and fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else "?"


def pid_alive(pid: int) -> bool:
    """Does process ``pid`` run (a zombie does not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start_time(pid) is not None if Path("/proc").is_dir() else True


def process_identity(pid: int) -> str:
    """``pid:starttime@host``: identifies a process even after its pid is reused."""
    return f"{pid}:{start_time(pid) or '?'}@{socket.gethostname()}"


def process_alive(identity: str | None) -> bool:
    """Is the process recorded as ``identity`` (see :func:`process_identity`) alive?

    A process of another host cannot be checked from here: it counts as alive."""
    if not identity:
        return False
    local, _, host = identity.partition("@")
    if host and host != socket.gethostname():
        return True
    pid_text, _, started = local.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if not pid_alive(pid):
        return False
    now = start_time(pid) if Path("/proc").is_dir() else "?"
    return now is not None and (started in ("", "?") or now in ("?", started))
