"""What the fault tests share: the real ``ultron`` CLI, the one-line rule, store row hashes,
secret scans and listening sockets of processes."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent / "ultron"
ROOT = Path(__file__).resolve().parents[2]


def ultron(cwd: Path, *args: str, stdin: str = "", env: Mapping[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the ``ultron`` console script as a real process (this worktree's code)."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("ULTRON_HOME", "ULTRON_DB_URL", "ULTRON_FLINK_URL",
                                "ULTRON_TRACEBACK")}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *[p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]])
    environment.update(env or {})
    return subprocess.run([str(BIN), *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=environment)


def one_line(result: subprocess.CompletedProcess[str], *culprits: str,
             error: str | None = None) -> str:
    """Assert the CLI failed (status 2) with ONE line on stderr, no traceback, naming every
    one of ``culprits`` (and starting with ``error:`` when given); the line."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()
             and not ln.startswith("using flow ")]  # the note of the flow it picked
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    line = lines[0]
    for culprit in culprits:
        assert culprit in line, (culprit, line)
    if error is not None:
        assert line.startswith(f"{error}: "), line
    return line


def magic_line(ip: Any, line: str, cell: str | None = None) -> str:
    """Run ``%ultron LINE`` (``%%ultron`` with ``cell``) in the real IPython shell; assert it
    failed with a one-line UsageError and no traceback shown; the line."""
    from IPython.core.error import UsageError

    source = f"%%ultron {line}\n{cell}" if cell is not None else f"%ultron {line}"
    result = ip.run_cell(source, store_history=False)
    exc = result.error_in_exec or result.error_before_exec
    assert isinstance(exc, UsageError), (source, repr(exc))
    text = str(exc)
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text.strip()


# ---------------------------------------------------------------- the store, untouched
def sqlite_path(home: Path) -> Path:
    return home / "ultron.db"


def _read_only(db: Path) -> sqlite3.Connection:
    """A connection that cannot change ``db`` (immutable when no writer has it open, which
    also works on a read-only file system)."""
    shm = db.with_name(db.name + "-shm")
    return sqlite3.connect(f"file:{db}?mode=ro" + ("" if shm.exists() else "&immutable=1"),
                           uri=True)


def row_hashes(db: Path) -> dict[str, str]:
    """Per table of the SQLite store ``db``: a hash of all its rows (order-free), read
    without writing anything."""
    con = _read_only(db)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out = {}
        for table in tables:
            rows = sorted(repr(r) for r in con.execute(f'SELECT * FROM "{table}"'))
            out[table] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        return out
    finally:
        con.close()


def table_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the SQLite store ``db``."""
    con = _read_only(db)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: list(con.execute(f'SELECT * FROM "{t}"')) for t in tables}
    finally:
        con.close()


# ---------------------------------------------------------------- secrets
def files_holding(root: Path, needles: Iterable[bytes]) -> list[str]:
    """Every file under ``root`` whose bytes contain one of ``needles``."""
    wanted = [n for n in needles if n]
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if any(n in data for n in wanted):
            found.append(str(path))
    return found


# ---------------------------------------------------------------- sockets
def listening_sockets(pids: Iterable[int]) -> list[tuple[int, str, str, int]]:
    """(pid, process name, address, port) of every TCP socket listening in ``pids`` or
    any of their descendants (a kernel's JVM, a scheduler's node runners)."""
    import psutil

    seen: dict[int, Any] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        for p in [proc, *proc.children(recursive=True)]:
            seen[p.pid] = p
    out = []
    for pid, proc in sorted(seen.items()):
        try:
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    out.append((pid, proc.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue
    return out


def is_loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


