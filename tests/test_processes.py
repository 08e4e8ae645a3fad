"""Process liveness on real processes: running, zombie, reaped, and a reused pid."""

from __future__ import annotations

import subprocess
import sys
import time

from ultron_nb.processes import pid_alive, process_alive, process_identity


def test_a_process_is_alive_until_it_ends_and_a_zombie_counts_as_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        identity = process_identity(child.pid)
        assert pid_alive(child.pid) and process_alive(identity)
        pid, started_host = identity.split(":", 1)
        started, _, host = started_host.partition("@")
        # The same pid with another start time is another process (the pid was reused).
        assert not process_alive(f"{pid}:{int(started) + 1}@{host}")
        assert process_alive(f"{pid}:1@another-host")  # cannot be checked from here: alive
        child.kill()
        child_zombie = child.pid
        deadline = time.monotonic() + 10
        while pid_alive(child_zombie) and time.monotonic() < deadline:
            time.sleep(0.05)  # killed, not yet reaped: a zombie
        assert not pid_alive(child_zombie) and not process_alive(identity)
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid) and not process_alive(None)
