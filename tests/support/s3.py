"""A real S3-compatible server for tests: moto in server mode on 127.0.0.1, stopped by PID."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"
#: Credentials the test server accepts (any are); the secret must never show anywhere.
KEY, SECRET = "AKIAULTRONTEST", "ultron-test-secret-value-123"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    pid: int

    def options(self) -> dict[str, str]:
        """fsspec/s3fs storage options for this server."""
        return {"endpoint_url": self.endpoint, "key": KEY, "secret": SECRET}

    def filesystem(self) -> Any:  # an s3fs.S3FileSystem
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, key=KEY, secret=SECRET)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """``moto.server`` on a free port of 127.0.0.1; ready when it answers, killed by PID."""
    pytest.importorskip("moto.server", reason="moto[server] is a test dependency")
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with status {proc.returncode}")
            try:
                if httpx.get(f"{endpoint}/moto-api/", timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("moto server did not answer within 60 s")
            time.sleep(0.1)
        yield S3Server(endpoint, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
