"""``%ultron`` / ``%%ultron``: one magic, many verbs. Parsing only; the API does the work.

Each verb has its own argparse parser whose errors raise IPython's ``UsageError``. User
mistakes (:class:`~ultron_nb.errors.UltronError`) surface as one line
``ErrorType: message``; ``%config UltronMagic.show_traceback = True`` shows full tracebacks.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Int, Unicode, observe

from ultron_nb.errors import UltronError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or self.format_usage())


Runner = Callable[["UltronMagic", argparse.Namespace, str | None], Any]


@dataclass
class Verb:
    name: str
    help: str
    parser: _Parser
    run: Runner
    cell: bool | None  # True: needs a cell body; False: line only; None: either


VERBS: dict[str, Verb] = {}


def verb(
    name: str, help: str, *, cell: bool | None = False
) -> Callable[[Callable[[argparse.ArgumentParser], Runner]], None]:
    """Register a verb: the decorated function adds arguments and returns the runner."""

    def register(build: Callable[[argparse.ArgumentParser], Runner]) -> None:
        parser = _Parser(prog=f"%ultron {name}", description=help, add_help=False)
        VERBS[name] = Verb(name, help, parser, build(parser), cell)

    return register


@magics_class
class UltronMagic(Magics):
    """The ``%ultron`` magic. Settings are traitlets: ``%config UltronMagic.flink_url = ...``."""

    flink_url = Unicode("", help="REST URL of a remote Flink cluster ('' = local)").tag(
        config=True)
    flink_port = Int(0, help="REST port of the local Flink cluster (0 = default 8081)").tag(
        config=True)
    home = Unicode("", help="directory of the metadata store and local data").tag(config=True)
    db_url = Unicode("", help="SQLAlchemy URL of the metadata store").tag(config=True)
    mlflow_uri = Unicode("", help="MLflow tracking/registry URI ('' = SQLite under the home)"
                         ).tag(config=True)
    show_traceback = Bool(False, help="show full tracebacks instead of one-line errors").tag(
        config=True)

    def __init__(self, shell: Any = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        self._workspace: Any = None
        self.current_flow: str | None = None

    @observe("flink_url", "flink_port", "home", "db_url", "mlflow_uri")
    def _settings_changed(self, _change: Any) -> None:
        self._workspace = None

    @property
    def workspace(self) -> Any:
        if self._workspace is None:
            from ultron_nb.services.workspace import Workspace

            self._workspace = Workspace(
                home=self.home or None,
                db_url=self.db_url or None,
                flink_url=self.flink_url or None,
                flink_port=self.flink_port or None,
                mlflow_uri=self.mlflow_uri or None,
            )
        return self._workspace

    def require_flow(self) -> str:
        if self.current_flow is None:
            raise UsageError("no current flow: select one with %ultron flow NAME")
        return self.current_flow

    @line_cell_magic
    def ultron(self, line: str, cell: str | None = None) -> Any:
        """Run ``%ultron VERB ...``; ``%ultron help`` lists the verbs."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%ultron: cannot parse the line: {exc}") from None
        if not argv:
            argv = ["help"]
        name, rest = argv[0], argv[1:]
        entry = VERBS.get(name)
        if entry is None:
            import difflib

            close = difflib.get_close_matches(name, list(VERBS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"%ultron: unknown verb {name!r}{hint}; see %ultron help")
        if entry.cell is True and cell is None:
            raise UsageError(f"%ultron {name} needs a cell body: use %%ultron {name} ...")
        if entry.cell is False and cell is not None and cell.strip():
            raise UsageError(f"%ultron {name} takes no cell body: use %ultron {name} ...")
        args = entry.parser.parse_args(rest)
        try:
            return entry.run(self, args, cell)
        except UltronError as exc:
            if self.show_traceback:
                raise
            raise UsageError(f"{type(exc).__name__}: {exc}") from None


def help_text(name: str | None = None) -> str:
    if name:
        entry = VERBS.get(name)
        if entry is None:
            raise UsageError(f"%ultron help: unknown verb {name!r}")
        return entry.parser.format_help()
    width = max(len(v) for v in VERBS)
    lines = ["%ultron VERB [args]   (%%ultron for verbs with a cell body)", ""]
    lines += [f"  {v.name.ljust(width)}  {v.help}" for v in VERBS.values()]
    lines += ["", "%ultron help VERB shows a verb's flags. Settings: %config UltronMagic"]
    return "\n".join(lines)


def load_verbs() -> None:
    """Import the verb modules (each registers its verbs)."""
    from ultron_nb.notebook import verbs_flow  # noqa: F401

    register_commands()


def register_commands() -> None:
    """Register the commands shared with the CLI (:mod:`ultron_nb.commands`) as verbs."""
    from ultron_nb.commands import COMMANDS

    for cmd in COMMANDS.values():
        if cmd.name in VERBS:
            continue
        parser = _Parser(prog=f"%ultron {cmd.name}", description=cmd.help, add_help=False)
        if cmd.uses_flow:
            parser.add_argument("--flow", help="default: the current flow")
        run = cmd.build(parser)
        VERBS[cmd.name] = Verb(cmd.name, cmd.help, parser, _bind(run, cmd.uses_flow), cmd.cell)


def _bind(run: Any, uses_flow: bool) -> Runner:
    def verb_runner(m: UltronMagic, a: argparse.Namespace, cell: str | None) -> Any:
        if uses_flow and not a.flow:
            a.flow = m.require_flow()
        elif hasattr(a, "flow") and not a.flow:
            a.flow = m.current_flow
        return run(m.workspace, a, cell)

    return verb_runner
