"""A node as the ``%%ultron node`` cell that defines it: the inverse of the node flags.

:func:`node_cell` writes the flags and the body from which ``define_node`` (the ``node``
verb) builds the same node again — so re-running the cell gives the same content identity.
The flags are the node verb's (``ultron_nb.arguments``); a test round-trips every node shape.

IPython expands ``{expr}`` and ``$name`` in a magic's line, so the line escapes them
(``{{``, ``$$name``) wherever IPython would expand them; :func:`unescape_line` reads such a
line as IPython does, for readers that are not IPython.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from ultron_nb.errors import FlowError
from ultron_nb.flow.edges import Action, Trigger
from ultron_nb.flow.nodes import Kind, Mode, Node, python_function_names
from ultron_nb.flow.quality import DEFAULT_WINDOW, Rule

_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _flag(name: str, value: str) -> list[str]:
    return [name, value]


def _pairs(flag: str, pairs: Sequence[tuple[str, str]], node: str) -> list[str]:
    out: list[str] = []
    for key, value in pairs:
        if value != value.strip() or "=" in key or key != key.strip() or not key:
            raise FlowError(f"node {node!r}: {flag} {key}={value!r} cannot be written as a "
                            "flag (the flag strips spaces around it)")
        out += [flag, f"{key}={value}"]
    return out


def _trigger_flags(node: Node) -> list[str]:
    where = f"node {node.name!r}"
    out: list[str] = []
    actions = {e.action for e in node.triggers if e.trigger is not Trigger.STOP_AFTER}
    if len(actions) > 1:
        raise FlowError(f"{where}: its triggers take different actions, which one cell's "
                        "--action cannot say")
    after = [e for e in node.triggers if e.trigger is Trigger.AFTER]
    if len({(e.schedule, e.on_failure) for e in after}) > 1:
        raise FlowError(f"{where}: its --after edges differ in --boundary/--on-failure")
    for e in after:
        out += _flag("--after", str(e.source))
    if after and after[0].schedule:
        out += _flag("--boundary", after[0].schedule)
    if after and after[0].on_failure:
        out.append("--on-failure")
    for e in node.triggers:
        if e.trigger is Trigger.STOP_AFTER:
            out += _flag("--stop-after", str(e.source))
    periodic = [e for e in node.triggers if e.trigger is Trigger.PERIODIC]
    events = [e for e in node.triggers if e.trigger is Trigger.EVENT]
    if len(periodic) > 1 or len(events) > 1:
        raise FlowError(f"{where}: more than one --every or --on-event edge")
    if periodic:
        out += _flag("--every", str(periodic[0].schedule))
    if events:
        out += _flag("--on-event", str(events[0].event_key))
        if events[0].condition:
            out += _flag("--when", events[0].condition)
    if actions and (act := actions.pop()) is not Action.START:
        out += _flag("--action", str(act))
    return out


def node_flags(node: Node) -> list[str]:
    """The words after ``%%ultron node`` that define ``node`` (its name first)."""
    out = [node.name]
    options = list(node.options)
    if node.kind is Kind.RESOURCE:
        out += _flag("--kind", str(node.resource_type))
        special = {"partitions": "--partitions", "path": "--path", "format": "--format"}
        for key, flag in special.items():
            value = node.option_dict.get(key)
            if value is None or (key == "partitions" and not value.isdigit()):
                continue
            if value != value.strip():
                continue  # written with --option below (and refused there)
            out += _flag(flag, value)
            options = [(k, v) for k, v in options if k != key]
    elif node.kind is Kind.FLINK:
        out += _flag("--mode", str(node.mode or Mode.STREAM))
    else:
        out += _flag("--kind", str(node.kind))
    if node.kind is Kind.PYTHON and node.function:
        funcs = python_function_names(node.body)
        inferred = node.name if node.name in funcs else funcs[0] if len(funcs) == 1 else None
        if inferred != node.function:
            out += _flag("--fn", node.function)
    if node.inputs:
        out += ["--inputs", *node.inputs]
    out += _pairs("--param", node.params, node.name)
    out += _pairs("--option", options, node.name)
    for flag, value in (("--time", node.time_column), ("--watermark", node.watermark),
                        ("--key", node.key)):
        if value:
            out += _flag(flag, value)
    if node.bounded:
        out.append("--bounded")
    out += _trigger_flags(node)
    if node.description:
        out += _flag("--description", node.description)
    return out


def _column_text(node: Node) -> str:
    return ",\n".join(
        f"{c.name if _PLAIN_NAME.match(c.name) else '`' + c.name.replace('`', '``') + '`'} "
        f"{c.type}" for c in node.columns)


def _fields(line: str) -> int:
    """How many expressions IPython would expand in ``line`` (``{expr}``, ``$name``)."""
    from IPython.utils.text import DollarFormatter  # lazy: only exports and imports need it

    return sum(1 for _, name, _, _ in DollarFormatter().parse(line) if name is not None)


def escape_line(words: Sequence[str]) -> str:
    """A magic's line from its words: shell-quoted, with every brace doubled and every
    ``$name`` IPython would expand written ``$$name``, so that IPython hands the magic
    exactly ``words``."""
    plain = " ".join(shlex.quote(w) for w in words)
    line = plain.replace("{", "{{").replace("}", "}}")
    while _fields(line):
        for i, ch in enumerate(line):
            if ch == "$" and _fields(line[:i] + "$" + line[i:]) < _fields(line):
                line = line[:i] + "$" + line[i:]
                break
        else:
            raise FlowError(f"cannot write {plain!r} as a magic's line that IPython leaves "
                            "as it is")
    if unescape_line(line) != plain:
        raise FlowError(f"cannot write {plain!r} as a magic's line that IPython leaves as it "
                        "is")
    return line


def unescape_line(line: str) -> str:
    """What IPython makes of an :func:`escape_line` line (a line with nothing to expand)."""
    from IPython.utils.text import DollarFormatter

    parts = []
    for literal, name, _, _ in DollarFormatter().parse(line):
        if name is not None:
            raise FlowError(f"the line {line!r} asks IPython to expand {name!r}")
        parts.append(literal)
    return "".join(parts)


def node_cell(node: Node, *, flow: str | None = None) -> str:
    """The ``%%ultron node`` cell that defines ``node`` (with ``--flow`` when given)."""
    words = node_flags(node)
    if flow:
        words += ["--flow", flow]
    body = _column_text(node) if node.kind is Kind.RESOURCE else node.body
    return f"%%ultron node {escape_line(words)}\n{body}"


def rule_cell(node: str, rules: Sequence[Rule], *, flow: str | None = None) -> str:
    """The ``%%ultron rule`` cell that gives ``node`` its data-quality ``rules`` (one
    window: a node's rules are set together)."""
    windows = {r.window for r in rules}
    if len(windows) > 1:
        raise FlowError(f"node {node!r}: its rules hold over different windows, which one "
                        "rule cell's --window cannot say")
    words = [node]
    if windows and (window := windows.pop()) != DEFAULT_WINDOW:
        words += ["--window", window]
    if flow:
        words += ["--flow", flow]
    return f"%%ultron rule {escape_line(words)}\n" + "\n".join(r.text for r in rules)
