"""``%ultron`` / ``%%ultron``: one magic whose verbs come from :mod:`ultron_nb.commands`.

Each verb has its own argparse parser whose errors raise IPython's ``UsageError``; unknown
flags are rejected. User mistakes (:class:`~ultron_nb.errors.UltronError`) surface as one line
``ErrorType: message``; ``%config UltronMagic.show_traceback = True`` shows full tracebacks.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
from dataclasses import dataclass
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Int, Unicode, observe

from ultron_nb.commands import COMMANDS, Run, build_parser
from ultron_nb.errors import UltronError, disk_error
from ultron_nb.views import Message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or self.format_usage())


@dataclass
class Verb:
    name: str
    help: str
    parser: _Parser
    run: Run
    cell: bool | None  # True: needs a cell body; False: line only; None: either


VERBS: dict[str, Verb] = {}


def load_verbs() -> None:
    """Build one parser per verb of the registry that the notebook face offers."""
    for cmd in COMMANDS.values():
        if "magic" not in cmd.faces or cmd.name in VERBS:
            continue
        parser = _Parser(prog=f"%ultron {cmd.name}", description=cmd.help, add_help=False)
        VERBS[cmd.name] = Verb(cmd.name, cmd.help, parser, build_parser(cmd, parser), cmd.cell)


def _session() -> str:
    """Which notebook this kernel runs (Jupyter tells kernels), for the remembered flow."""
    return os.environ.get("JPY_SESSION_NAME", "")


def _show_watcher(watcher: Any) -> None:
    from ultron_nb.notebook.widgets import view_of

    view_of(watcher)._ipython_display_()


def _live(result: Any) -> Any:
    """A live result as its notebook view: a watch widget, or a follow run in the
    foreground with its widget (the verbs return them not started)."""
    from ultron_nb.experiments.follow import Follow
    from ultron_nb.experiments.watch import Watcher

    if isinstance(result, Watcher):
        from ultron_nb.notebook.widgets import view_of

        return view_of(result)
    if isinstance(result, Follow):
        from ultron_nb.notebook.widgets import FollowView

        return FollowView(result).run()
    return result


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

    face_name = "magic"

    def __init__(self, shell: Any = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        self._workspace: Any = None
        self._flow: str | None = None
        self._notes: list[str] = []
        if shell is not None and getattr(shell, "display_formatter", None) is not None:
            # ``experiments.status(...).watch()`` shows itself as the live watch widget.
            shell.display_formatter.ipython_display_formatter.for_type_by_name(
                "ultron_nb.experiments.watch", "Watcher", _show_watcher)

    @observe("flink_url", "flink_port", "home", "db_url", "mlflow_uri")
    def _settings_changed(self, _change: Any) -> None:
        self._workspace = None

    @property
    def workspace(self) -> Any:
        if self._workspace is None:
            from ultron_nb.workspace import Workspace

            self._workspace = Workspace(
                home=self.home or None,
                db_url=self.db_url or None,
                flink_url=self.flink_url or None,
                flink_port=self.flink_port or None,
                mlflow_uri=self.mlflow_uri or None,
            )
        return self._workspace

    # -- Face
    def current_flow(self, explicit: str | None = None) -> str:
        if explicit:
            return explicit
        if self._flow is not None:
            return self._flow
        name, why = self.workspace.current_flow(session=_session())
        self._flow = name
        if why:
            self._notes.append(why)
        return name

    def select_flow(self, name: str) -> None:
        self._flow = name
        self.workspace.remember_flow(name, session=_session())

    def variable(self, name: str) -> Any:
        """The notebook variable ``name`` (NotFoundError naming it when there is none)."""
        from ultron_nb.errors import NotFoundError

        ns = self.shell.user_ns if self.shell is not None else {}
        if name not in ns:
            raise NotFoundError(f"no variable {name!r} in the notebook")
        return ns[name]

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
            close = difflib.get_close_matches(name, list(VERBS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"%ultron: unknown verb {name!r}{hint}; see %ultron help")
        if entry.cell is True and cell is None:
            raise UsageError(f"%ultron {name} needs a cell body: use %%ultron {name} ...")
        if entry.cell is False and cell is not None and cell.strip():
            raise UsageError(f"%ultron {name} takes no cell body: use %ultron {name} ...")
        args = entry.parser.parse_args(rest)
        self._notes = []
        try:
            result = _live(entry.run(self, args, cell))
        except (UltronError, OSError) as exc:
            error = exc if isinstance(exc, UltronError) else disk_error(exc)
            if error is None or self.show_traceback:
                raise
            raise UsageError(f"{type(error).__name__}: {error}") from None
        return self._with_notes(result)

    def _with_notes(self, result: Any) -> Any:
        """Show the face's notes (the flow it picked, a cut result) before the result."""
        notes = list(self._notes)
        note = getattr(getattr(result, "attrs", None), "get", lambda _k: None)("note")
        if note:
            notes.append(str(note))
        if notes and self.shell is not None:
            from IPython.display import display

            display(Message(*notes))
        return result
