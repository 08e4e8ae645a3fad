"""The ``ultron`` console script, run as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "ultron"


def ultron(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_define_list_show_remove(workdir: Path) -> None:
    r = ultron(workdir, "node", "imps", "--flow", "ctr", "--kind", "topic", "--time", "ts",
               "--watermark", "5 s", stdin="k STRING, ts TIMESTAMP(3)")
    assert r.returncode == 0, r.stderr
    assert "defined topic node imps (flow ctr version 1)" in r.stdout
    (workdir / "q.sql").write_text("SELECT k, COUNT(*) AS n FROM imps GROUP BY k")
    r = ultron(workdir, "node", "counts", "--body-file", "q.sql")  # the only flow
    assert r.returncode == 0, r.stderr
    r = ultron(workdir, "flows")
    assert "ctr   2" in r.stdout
    r = ultron(workdir, "nodes", "ctr")
    assert "counts  flink stream  imps" in r.stdout
    r = ultron(workdir, "show", "ctr", "--format", "dot")
    assert '"imps" -> "counts" [label="data"]' in r.stdout
    r = ultron(workdir, "show", "ctr", "--format", "svg", "-o", "ctr.svg")
    assert r.returncode == 0, r.stderr
    assert (workdir / "ctr.svg").read_text().lstrip().startswith("<?xml")
    r = ultron(workdir, "rm", "counts", "--flow", "ctr")
    assert "removed node counts (flow ctr version 3)" in r.stdout


def test_errors_are_one_line_with_status_2(workdir: Path) -> None:
    r = ultron(workdir, "show", "nope")
    assert r.returncode == 2
    assert r.stderr == "NotFoundError: no flow named 'nope' (no flows yet)\n"
    r = ultron(workdir, "node", "x", "--flow", "f", "--body-file", "missing.sql")
    assert r.returncode == 2
    assert r.stderr.startswith("ConfigError: --body-file missing.sql: No such file")
    r = ultron(workdir, "node", "x", "--flow", "f", stdin="SELECT * FROM y")
    assert r.returncode == 2 and "node 'x': its SQL reads 'y'" in r.stderr
    assert ultron(workdir, "flows").stdout.count("\n") == 2  # header only: nothing was stored
