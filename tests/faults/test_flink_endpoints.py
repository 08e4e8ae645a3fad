"""Flink URLs that are wrong or carry credentials (issue 14, items 1, 2 and 6).

- A URL whose server is not Flink (an HTML page with 200, an empty 200, an HTML 404) is said
  to be one in one line, from ``run --target``, ``cluster status`` and ``status`` — never a
  traceback, never the page pasted.
- ``http://admin:SECRET@host:port``: the real cluster behind a proxy that requires Basic
  auth is used by the CLI, the scheduler daemon and job submission with the configured
  credentials, and SECRET appears in no output, no log, no row of any table and no file under
  the home. The home, the store and the logs are readable by their owner only.
"""

from __future__ import annotations

import base64
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.faults import files_holding, one_line, table_rows, ultron
from tests.support.auth_proxy import AuthProxy
from tests.support.waiting import wait_until
from ultron_nb.engines.flink.rest import FlinkRest

IMPRESSIONS = "imp_id BIGINT, user_id BIGINT, item_id BIGINT, position INT, ts TIMESTAMP(3)"
CLICKS = "imp_id BIGINT, user_id BIGINT, item_id BIGINT, ts TIMESTAMP(3)"
PASSTHROUGH = "SELECT imp_id, user_id, ts FROM impressions"
LATER = "SELECT imp_id, ts FROM passthrough"


#: The flow of these tests, as ``ultron node NAME --flow ctr FLAGS`` with BODY on stdin.
NODES = (
    ("impressions", ["--kind", "topic", "--time", "ts", "--watermark", "2 s"], IMPRESSIONS),
    ("clicks", ["--kind", "topic", "--time", "ts", "--watermark", "2 s"], CLICKS),
    ("passthrough", ["--option", "checkpoint_interval=1 s"], PASSTHROUGH),
    ("later", ["--after", "passthrough", "--option", "checkpoint_interval=1 s"], LATER),
)


def _define(workdir: Path, env: dict[str, str]) -> None:
    """The flow, through the CLI (a process per node, with ``env``)."""
    for name, flags, body in NODES:
        r = ultron(workdir, "node", name, "--flow", "ctr", *flags, stdin=body, env=env)
        assert r.returncode == 0, r.stderr


def _define_here(workdir: Path) -> None:
    """The same flow, its flags parsed as the faces parse them, defined in this process (the
    CLI's define is not what the tests using it are about, and each process costs seconds)."""
    import argparse

    from ultron_nb.arguments import add_node_arguments, node_kwargs
    from ultron_nb.config import Settings
    from ultron_nb.flow.build import define_node
    from ultron_nb.workspace import Workspace

    parser = argparse.ArgumentParser()
    add_node_arguments(parser)
    ws = Workspace(Settings(home=workdir / ".ultron"))
    for name, flags, body in NODES:
        args = parser.parse_args([name, *flags])
        ws.define("ctr", define_node(args.name, body, **node_kwargs(args)))


@pytest.fixture
def proxy_factory() -> Iterator[Any]:
    started: list[AuthProxy] = []

    def make(upstream: int = 9, user: str = "admin", password: str = "x",
             mode: str = "proxy") -> AuthProxy:
        proxy = AuthProxy(upstream, user, password, mode).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


# ---------------------------------------------------------------- items 1 and 2
@pytest.mark.parametrize("mode", ["html", "empty", "notfound"])
def test_a_server_that_is_not_flink_is_one_line(workdir: Path, proxy_factory: Any,
                                                mode: str) -> None:
    web = proxy_factory(mode=mode)
    _define_here(workdir)
    r = ultron(workdir, "run", "--flow", "ctr", "--target", web.url)
    line = one_line(r, web.url, "not Flink", "Flink REST endpoint", error="ClusterError")
    assert "<" not in line and "It works" not in line  # the page is not pasted
    r = ultron(workdir, "cluster", "status", env={"ULTRON_FLINK_URL": web.url})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "not running" in r.stdout and "not Flink" in r.stdout, r.stdout
    assert "<" not in r.stdout and "It works" not in r.stdout
    r = ultron(workdir, "up", env={"ULTRON_FLINK_URL": web.url})
    one_line(r, web.url, "not Flink", error="ClusterError")


# ---------------------------------------------------------------- item 6
@pytest.mark.flink
@pytest.mark.slow
def test_credentials_in_the_flink_url_are_used_and_never_stored_shown_or_logged(
    workdir: Path, flink_cluster: Any, proxy_factory: Any,
) -> None:
    secret = f"s3cr3t-{secrets.token_hex(6)}"
    encoded = base64.b64encode(f"admin:{secret}".encode())
    proxy = proxy_factory(flink_cluster.rest_port, "admin", secret)
    url = f"http://admin:{secret}@127.0.0.1:{proxy.port}"
    env = {"ULTRON_FLINK_URL": url}
    outputs: list[str] = []

    def cli(*args: str, stdin: str = "", environment: dict[str, str] | None = None) -> Any:
        r = ultron(workdir, *args, stdin=stdin, env=environment or env)
        outputs.extend([r.stdout, r.stderr])
        return r

    home = workdir / ".ultron"
    pyflink_logs = _pyflink_log_dir()
    started = time.time()
    try:
        r = cli("gen", "clicklog", "--rate", "5", "--duration", "120", "--partitions", "1",
                "--seed", "3")
        assert r.returncode == 0, r.stderr
        _define(workdir, env)
        r = cli("up")  # a remote cluster: checks it answers, starts the scheduler
        assert r.returncode == 0, r.stderr
        assert f"127.0.0.1:{proxy.port}" in r.stdout and "running" in r.stdout, r.stdout
        r = cli("run", "--flow", "ctr", "--name", "e1")
        assert r.returncode == 0, r.stderr

        # The scheduler (its own process, its own JVM) starts `later` after passthrough
        # runs: through the proxy, with the configured credentials.
        def both_running() -> Any:
            r = cli("status", "e1")
            lines = [ln for ln in r.stdout.splitlines() if ln.strip().startswith(
                ("passthrough", "later"))]
            return len(lines) == 2 and all(" running " in ln for ln in lines) and r.stdout
        out = wait_until(both_running, 240, "both Flink nodes to run")
        with FlinkRest(flink_cluster.url) as real:  # behind the proxy, the real cluster
            names = {j["name"] for j in real.jobs_overview() if j["state"] == "running"}
        assert any("e1/passthrough" in n for n in names) and any("e1/later" in n
                                                                  for n in names), names
        assert proxy.forwarded > 0 and proxy.refused == 0  # nobody came without them
        assert f"on http://127.0.0.1:{proxy.port}:" in out
        r = cli("experiments")
        assert f"http://127.0.0.1:{proxy.port}" in r.stdout, r.stdout

        # Without credentials: one clear line (the proxy refuses), no secret to show.
        r = cli("cluster", "status",
                environment={"ULTRON_FLINK_URL": f"http://127.0.0.1:{proxy.port}"})
        assert "401" in r.stdout and "needs credentials" in r.stdout, r.stdout
        assert proxy.refused > 0

        # The proxy turns into a web server that is not Flink: status says so in its line.
        for mode in ("html", "empty", "notfound"):
            proxy.mode = mode
            r = cli("status", "e1")
            assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
            assert "not Flink" in r.stdout and "It works" not in r.stdout, r.stdout
        proxy.mode = "proxy"

        r = cli("stop", "e1")
        assert r.returncode == 0 and "canceled" in r.stdout, r.stdout + r.stderr
        wait_until(lambda: not any(
            j["state"] == "running" and "e1/" in j["name"]
            for j in FlinkRest(flink_cluster.url).jobs_overview()), 60, "the jobs to stop")
        r = cli("down")
        assert r.returncode == 0, r.stderr
    finally:
        ultron(workdir, "down", env=env)
        _cancel(flink_cluster, "e1/")

    # No secret anywhere: outputs, store rows, files under the home, logs.
    needles = (secret.encode(), encoded)
    for text in outputs:
        assert secret not in text and encoded.decode() not in text
    for table, rows in table_rows(home / "ultron.db").items():
        assert secret not in repr(rows), table
    assert files_holding(home, needles) == []
    assert files_holding(Path(flink_cluster.log_dir), needles) == []
    if pyflink_logs is not None:
        fresh = [p for p in pyflink_logs.glob("*") if p.stat().st_mtime >= started]
        assert [p for p in fresh if any(n in p.read_bytes() for n in needles)] == []
    scheduler_log = home / "logs" / "scheduler.log"
    assert scheduler_log.is_file() and "Flink job" in scheduler_log.read_text()

    # Owner only: the home, the store, the logs.
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for path in (home / "ultron.db", scheduler_log):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((home / "logs").stat().st_mode) == 0o700


def _pyflink_log_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "log"
    return folder if folder.is_dir() else None


def _cancel(cluster: Any, marker: str) -> None:
    with FlinkRest(cluster.url) as rest:
        for job in rest.jobs_overview():
            if marker in job["name"] and job["state"] in ("running", "created", "restarting"):
                rest.cancel(job["jid"])
