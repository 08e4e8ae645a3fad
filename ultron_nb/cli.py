"""The ``ultron`` command: the verbs of :mod:`ultron_nb.commands`, from a shell.

Errors a user can cause — and faults of the machine such as a full or read-only disk —
print one line ``ErrorType: message`` and exit with status 2 (a check that finds problems
exits with 1); ``ULTRON_TRACEBACK=1`` shows the full traceback.
``ultron up`` / ``ultron down`` are short for ``ultron cluster up`` / ``cluster down``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ultron_nb.commands import COMMANDS, Command, build_parser
from ultron_nb.errors import ConfigError, UltronError, disk_error

ALIASES = {"up": ["cluster", "up"], "down": ["cluster", "down"]}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class CliFace:
    """The CLI's side of :class:`ultron_nb.commands.Face`."""

    face_name = "cli"

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self._workspace: Any = None

    @property
    def workspace(self) -> Any:
        if self._workspace is None:
            from ultron_nb.workspace import Workspace

            a = self.args
            self._workspace = Workspace(home=a.home, db_url=a.db_url, flink_url=a.flink_url)
        return self._workspace

    def current_flow(self, explicit: str | None = None) -> str:
        name, why = self.workspace.current_flow(explicit)
        if why:
            sys.stderr.write(why + "\n")
        return name

    def select_flow(self, name: str) -> None:
        self.workspace.remember_flow(name)

    def variable(self, name: str) -> Any:
        from ultron_nb.errors import ConfigError

        raise ConfigError(f"{name!r}: the CLI has no notebook variables; use --file F")


def build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``ultron`` parser and each verb's parser."""
    parser = _Parser(prog="ultron", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--home", help="directory of the metadata store (default ./.ultron)")
    parser.add_argument("--db-url", help="SQLAlchemy URL of the metadata store")
    parser.add_argument("--flink-url", help="REST URL of a remote Flink cluster")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    verbs: dict[str, argparse.ArgumentParser] = {}
    for name, cmd in COMMANDS.items():
        if "cli" not in cmd.faces:
            continue
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        run = build_parser(cmd, p)
        if cmd.cell is not False:
            p.add_argument("--body-file", help="file with the body ('-' or absent: stdin)")
        p.set_defaults(handler=(cmd, run))
        verbs[name] = p
    return parser, verbs


def _read_body(path: str | None) -> str:
    if path in (None, "-"):
        return "" if path is None and sys.stdin.isatty() else sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--body-file {path}: {exc.strerror}") from None


def _write(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _watch(watcher: Any) -> int:
    """Print each snapshot that differs from the one before, until the experiment ends (or
    Ctrl-C)."""
    last: tuple[str, str, str] | None = None
    try:
        for snap in watcher.snapshots():
            key = (str(snap.table()), snap.error, snap.status.state)
            if key != last:
                _write(f"{snap}\n")
            last = key
    except KeyboardInterrupt:
        watcher.stop()
    return 0


def _follow(follow: Any) -> int:
    """Print the rows as they arrive, until a cap (or Ctrl-C, which cancels the query)."""
    def show(f: Any) -> None:
        for line in f.drain_lines():
            _write(line)

    follow.run(show)
    _write(follow.headline)
    return 0


def _emit(value: Any) -> int:
    """Print a result; the exit status (1 when a check it reports failed). A live result
    (a watch, a follow) prints as it goes."""
    from ultron_nb.experiments.follow import Follow
    from ultron_nb.experiments.watch import Watcher

    if value is None:
        return 0
    if isinstance(value, Watcher):
        return _watch(value)
    if isinstance(value, Follow):
        return _follow(value)
    text = str(value)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 1 if getattr(value, "failed", False) is True else 0


def main(argv: Sequence[str] | None = None) -> int:
    from ultron_nb.logs import quiet_third_party

    quiet_third_party()
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, word in enumerate(argv):
        if not word.startswith("-"):
            if word in ALIASES:
                argv[i:i + 1] = ALIASES[word]
            break
    parser, verbs = build()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the verb (and its action) whose flags these are not
        action = getattr(args, "action", None)
        verb = verbs[args.command]
        prog = f"{verb.prog} {action}" if isinstance(action, str) else verb.prog
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extra)}\n")
    cmd, run = args.handler
    assert isinstance(cmd, Command)
    try:
        body = _read_body(getattr(args, "body_file", None)) if cmd.cell is not False else None
        return _emit(run(CliFace(args), args, body))
    except (UltronError, OSError) as exc:
        error = exc if isinstance(exc, UltronError) else disk_error(exc)
        if error is None or os.environ.get("ULTRON_TRACEBACK"):
            raise
        sys.stderr.write(f"{type(error).__name__}: {error}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
