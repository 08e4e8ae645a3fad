"""The one verb registry: every verb has the same flags in the magic and in the CLI."""

from __future__ import annotations

import argparse

import pytest

from ultron_nb.cli import build
from ultron_nb.commands import COMMANDS
from ultron_nb.notebook.magics import VERBS, load_verbs

#: What a face adds of its own: the CLI's help flag and the body of cell verbs from a file.
FACE_ONLY = {"-h", "--help", "--body-file"}


def flags(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """Option strings and positional names of ``parser`` and of each of its sub-commands."""
    out: dict[str, set[str]] = {"": set()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for key, value in flags(sub).items():
                    out[f"{name} {key}".strip()] = value
            continue
        names = set(action.option_strings) or {action.dest}
        out[""] |= names - FACE_ONLY
    return out


def test_every_verb_has_the_same_flags_in_both_faces() -> None:
    load_verbs()
    _, cli = build()
    both = [c for c in COMMANDS.values() if c.faces == {"magic", "cli"}]
    assert len(both) >= 20
    for cmd in both:
        assert cmd.name in VERBS and cmd.name in cli, cmd.name
        assert flags(VERBS[cmd.name].parser) == flags(cli[cmd.name]), cmd.name


@pytest.mark.parametrize("face", ["magic", "cli"])
def test_each_face_offers_every_verb_meant_for_it(face: str) -> None:
    load_verbs()
    _, cli = build()
    offered = set(VERBS) if face == "magic" else set(cli)
    assert offered == {c.name for c in COMMANDS.values() if face in c.faces}
