"""The ONE verb registry: commands, how a face builds their parsers, the help text.

The ``%ultron`` magic (:mod:`ultron_nb.notebook.magics`) and the ``ultron`` CLI
(:mod:`ultron_nb.cli`) both build their parsers from :data:`COMMANDS` with
:func:`build_parser`, so a verb has the same flags in both (a test walks the registry). A
command's ``run(face, args, body)`` returns an object that shows itself (text, HTML, a
DataFrame). ``face`` gives the workspace and the current flow (:class:`Face`).

Verbs that take a flow get ``--flow`` (and, for the looking verbs, an optional positional
FLOW); without one, the face's current flow is used — the notebook's selection, remembered
across kernel restarts per notebook, else the only flow in the store.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ultron_nb.errors import ConfigError


class Face(Protocol):
    """What a command needs from the face that runs it."""

    @property
    def workspace(self) -> Any: ...

    def current_flow(self, explicit: str | None = None) -> str: ...

    def select_flow(self, name: str) -> None: ...

    def variable(self, name: str) -> Any:
        """A variable of the user's session (a notebook's); refused where there is none."""
        ...


Run = Callable[[Face, argparse.Namespace, "str | None"], Any]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    build: Callable[[argparse.ArgumentParser], Run]  # adds the flags, returns the runner
    cell: bool | None = False  # True: needs a body (cell / stdin / --body-file); None: either
    flow: str = ""  # "": no flow; "option": --flow; "positional": [FLOW] and --flow
    faces: frozenset[str] = field(default_factory=lambda: frozenset({"magic", "cli"}))


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, *, cell: bool | None = False, flow: str = "",
            faces: tuple[str, ...] = ("magic", "cli"),
            ) -> Callable[[Callable[[argparse.ArgumentParser], Run]], None]:
    def register(build: Callable[[argparse.ArgumentParser], Run]) -> None:
        COMMANDS[name] = Command(name, help, build, cell, flow, frozenset(faces))

    return register


def build_parser(cmd: Command, parser: argparse.ArgumentParser) -> Run:
    """Add ``cmd``'s flags (the same for every face) to ``parser``; its runner."""
    if cmd.flow == "positional":
        parser.add_argument("flow_name", nargs="?", metavar="FLOW",
                            help="the flow (default: the current flow)")
    if cmd.flow:
        parser.add_argument("--flow", help="the flow (default: the current flow)")
    return cmd.build(parser)


def flow_of(face: Face, a: argparse.Namespace) -> str:
    """The flow a command acts on: positional, ``--flow``, or the face's current one."""
    return face.current_flow(getattr(a, "flow_name", None) or getattr(a, "flow", None))


def _when(epoch: float, spec: str = "seconds") -> str:
    return datetime.fromtimestamp(epoch).isoformat(" ", spec)


#: The order of the areas in ``%ultron help`` (the modules of this package).
SECTIONS = ("flows", "runtime", "experiments", "widgets", "share", "history", "models",
            "events")


def _section(cmd: Command) -> tuple[int, int]:
    area = cmd.build.__module__.rsplit(".", 1)[-1]
    rank = SECTIONS.index(area) if area in SECTIONS else len(SECTIONS)
    return rank, list(COMMANDS).index(cmd.name)


def help_text(name: str | None = None, face: str = "magic") -> str:
    """The verbs (or one verb's flags), as the face shows them."""
    prefix = "%ultron" if face == "magic" else "ultron"
    if name:
        cmd = COMMANDS.get(name)
        if cmd is None or face not in cmd.faces:
            raise ConfigError(f"{prefix} help: unknown verb {name!r}")
        parser = argparse.ArgumentParser(prog=f"{prefix} {name}", description=cmd.help,
                                         add_help=False)
        build_parser(cmd, parser)
        return parser.format_help()
    verbs = sorted((c for c in COMMANDS.values() if face in c.faces), key=_section)
    width = max(len(c.name) for c in verbs)
    lines = [f"{prefix} VERB [args]" + ("   (%%ultron for verbs with a cell body)"
                                        if face == "magic" else ""), ""]
    lines += [f"  {c.name.ljust(width)}  {c.help}" for c in verbs]
    lines += ["", f"{prefix} help VERB shows a verb's flags."]
    return "\n".join(lines)
