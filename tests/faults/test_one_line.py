"""Every verb in ``%ultron help`` fails with one line on a mistake, in both faces.

The README promises: "Mistakes fail the cell with one line, ``ErrorType: message``, naming
the node or flag, and leave the store unchanged." This walks the ONE verb registry
(:data:`ultron_nb.commands.COMMANDS`): each verb gets an unknown flag and a realistic bad
value, through the real ``ultron`` process and through the real ``%ultron`` magic; a verb
added to the registry without a case here fails the test. Then the define-time checks
(issue 14, item 10) and the global flags of the CLI (item 9).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.faults.faults import magic_line, one_line, row_hashes, ultron
from ultron_nb.commands import COMMANDS

#: A realistic mistake per verb: (arguments, body or None, what the one line must name).
BAD_VALUES: dict[str, tuple[list[str], str | None, list[str]]] = {
    "help": (["nosuchverb"], None, ["nosuchverb"]),
    "flow": ([], None, ["flow", "name"]),
    "node": (["1bad", "--kind", "topic"], "a STRING", ["1bad"]),
    "rm": (["ghost", "--flow", "f"], None, ["ghost"]),
    "rule": (["imps", "--flow", "f"], "null_rate(imp_id) < 0.1", ["imps",
                                                                 "null_rate(imp_id) < 0.1"]),
    "nodes": (["f", "--version", "abc"], None, ["--version", "abc"]),
    "show": (["f", "--format", "png"], None, ["--format", "png"]),
    "flows": (["extra"], None, ["extra"]),
    "history": (["ghost"], None, ["ghost"]),
    "cluster": (["up", "--port", "abc"], None, ["--port", "abc"]),
    "scheduler": (["extra"], None, ["extra"]),
    "gen": (["clicklog", "--rate", "-5"], None, ["rate"]),
    "run": (["--flow", "f", "--param", "ghost.lr=1"], None, ["--param ghost.lr", "ghost"]),
    "status": (["ghost"], None, ["ghost"]),
    "experiments": (["--of"], None, ["--of"]),
    "stop": (["ghost"], None, ["ghost"]),
    "resume": (["ghost"], None, ["ghost"]),
    "savepoints": (["ghost"], None, ["ghost"]),
    "quality": (["ghost"], None, ["ghost"]),
    "restart": (["ghost", "imps"], None, ["ghost"]),
    "preview": (["imps", "--limit", "0"], None, ["--limit"]),
    "sql": (["--flow", "f", "--limit", "0"], "SELECT * FROM imps", ["--limit"]),
    "clone": (["ghost", "new", "--set", "x"], None, ["--set", "x"]),
    "diff": (["a", "b"], None, ["'a'"]),
    "backtrack": (["prepare", "/nonexistent", "--key", "k", "--time", "t", "--partitions",
                   "0", "--from", "2024-01-01", "--to", "2024-01-02"], None, ["partitions"]),
    "features": (["versions", "ghost"], None, ["ghost"]),
    "events": (["--limit", "abc"], None, ["--limit", "abc"]),
    "send": (["", "v"], None, ["key"]),
    "models": (["--experiment", "ghost"], None, ["ghost"]),
    "model": (["promote", "m", "abc", "--alias", "champion"], None, ["version", "abc"]),
    "mlflow": (["bogus"], None, ["bogus"]),
    "export": (["ghost", "--out", "x.ipynb"], None, ["ghost"]),
    "import": (["/nonexistent/shared.ipynb"], None, ["/nonexistent/shared.ipynb"]),
    "watch": (["ghost", "--interval", "abc"], None, ["--interval", "abc"]),
    "effect": (["ghost", "--metric", "mse"], None, ["--metric", "mse"]),
    "append": (["ghost", "--file", "rows.csv"], None, ["ghost"]),
}


def _verbs(face: str) -> list[str]:
    return sorted(n for n, c in COMMANDS.items() if face in c.faces)


def test_every_verb_has_a_case() -> None:
    assert sorted(BAD_VALUES) == sorted(COMMANDS), "give each new verb a mistake here"


@pytest.fixture
def store(workdir: Path) -> Path:
    """A store with flow f (one topic node, imps) made by the real CLI."""
    r = ultron(workdir, "node", "imps", "--flow", "f", "--kind", "topic", "--time", "ts",
               stdin="imp_id BIGINT, ts TIMESTAMP(3)")
    assert r.returncode == 0, r.stderr
    return workdir / ".ultron" / "ultron.db"


@pytest.mark.slow
def test_cli_every_verb_one_line_and_the_store_unchanged(workdir: Path, store: Path) -> None:
    before = row_hashes(store)
    for verb in _verbs("cli"):
        args, body, culprits = BAD_VALUES[verb]
        r = ultron(workdir, verb, *args, stdin=body or "")
        one_line(r, *culprits)
        # An unknown flag names the verb (and the action of verbs that have actions).
        r = ultron(workdir, verb, *args[:1], "--no-such-flag", stdin=body or "")
        line = one_line(r)
        assert f"ultron {verb}" in line or "required" in line or verb in line, line
        assert row_hashes(store) == before, verb


@pytest.mark.slow
def test_magic_every_verb_one_line_and_the_store_unchanged(ip: Any, store: Path) -> None:
    before = row_hashes(store)
    for verb in _verbs("magic"):
        args, body, culprits = BAD_VALUES[verb]
        line = magic_line(ip, " ".join([verb, *map(shlex.quote, args)]), body)
        for culprit in culprits:
            assert culprit in line, (verb, culprit, line)
        line = magic_line(ip, " ".join([verb, *map(shlex.quote, args[:1]),
                                        "--no-such-flag"]), body)
        assert verb in line, (verb, line)
        assert row_hashes(store) == before, verb


def test_sub_action_flags_are_named_with_their_action(workdir: Path, store: Path) -> None:
    r = ultron(workdir, "backtrack", "check", "order", "x", "--no-such-flag")
    assert one_line(r) == ("ultron backtrack check: error: unrecognized arguments: "
                           "--no-such-flag")


# ---------------------------------------------------------------- item 10: define-time checks
@pytest.mark.parametrize(("flags", "body", "culprits"), [
    (["--kind", "dataset", "--format", "bogus"], "a STRING", ["--format bogus", "json"]),
    (["--kind", "dataset", "--format", "duckdb"], "a STRING", ["--format duckdb"]),
    (["--kind", "topic", "--format", "csv"], "a STRING", ["--format csv", "topic"]),
    (["--kind", "duckdb", "--option", "format=xml"], "SELECT 1 AS x",
     ["--option format=xml", "parquet"]),
    (["--kind", "python", "--format", "json"], "def f():\n    return 1\n", ["--format"]),
    (["--kind", "topic"], "a NOTATYPE, ts TIMESTAMP(3)", ["'a'", "NOTATYPE"]),
    (["--kind", "dataset"], "a ARRAY<BOGUS>", ["'a'", "BOGUS"]),
    (["--kind", "topic"], "a DECIMAL(10, 2, 3)", ["'a'", "DECIMAL"]),
    (["--stop-after", "q"], "SELECT imp_id FROM imps", ["--stop-after q", "itself"]),
    (["--after", "q"], "SELECT imp_id FROM imps", ["--after q", "itself"]),
])
def test_define_time_mistakes_name_the_flag(workdir: Path, store: Path, flags: list[str],
                                            body: str, culprits: list[str]) -> None:
    before = row_hashes(store)
    r = ultron(workdir, "node", "q", "--flow", "f", *flags, stdin=body)
    one_line(r, "node 'q'", *culprits, error="FlowError")
    assert row_hashes(store) == before


def test_good_types_and_formats_are_accepted(workdir: Path, store: Path) -> None:
    body = ("a STRING, b DECIMAL(10, 2), c TIMESTAMP(3) WITH LOCAL TIME ZONE, d ARRAY<INT>, "
            "e MAP<STRING, BIGINT>, f ROW<x INT, y STRING>, g INT NOT NULL, h TIMESTAMP_LTZ(3)")
    r = ultron(workdir, "node", "ds", "--flow", "f", "--kind", "dataset", "--format",
               "parquet", stdin=body)
    assert r.returncode == 0, r.stderr


def test_run_param_and_clone_set_name_their_own_flag(workdir: Path, store: Path) -> None:
    r = ultron(workdir, "run", "--flow", "f", "--param", "ghost.lr=1")
    one_line(r, "--param ghost.lr", "no node 'ghost'")
    r = ultron(workdir, "run", "--flow", "f", "--param", "imps.lr=1")
    one_line(r, "--param imps.lr", "no parameter 'lr'")


# ---------------------------------------------------------------- item 9: global flags
def test_a_db_url_that_is_no_url_is_one_line(workdir: Path) -> None:
    r = ultron(workdir, "--db-url", "notaurl", "flows")
    one_line(r, "notaurl", error="StoreError")
    r = ultron(workdir, "--db-url", "postgresql://u:hunter2@[::1", "flows")
    assert "hunter2" not in r.stderr
    one_line(r, error="StoreError")


def test_a_home_that_cannot_be_created_is_one_line(workdir: Path) -> None:
    r = ultron(workdir, "--home", "/proc/1/nonexist", "flows")
    one_line(r, "/proc/1/nonexist", error="ConfigError")


def test_a_store_in_a_missing_folder_is_refused_unless_it_is_the_home(workdir: Path,
                                                                     tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    r = ultron(workdir, "--db-url", f"sqlite:///{missing}/x.db", "flows")
    one_line(r, str(missing), "does not exist", error="StoreError")
    assert not missing.exists()
    # The default home (and a new --home) is still created with its store.
    home = tmp_path / "new" / "home"
    r = ultron(workdir, "--home", str(home), "flows")
    assert r.returncode == 0, r.stderr
    assert (home / "ultron.db").is_file()
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    assert oct((home / "ultron.db").stat().st_mode & 0o777) == "0o600"
