"""Verbs of the notification service."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ultron_nb.commands.registry import Face, Run, _when, command
from ultron_nb.views import Message, Table


# ------------------------------------------------------------------ events
@command("events", "recent notification events (of KEY, or keys starting with KEY*)")
def _events(p: argparse.ArgumentParser) -> Run:
    p.add_argument("key", nargs="?")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--namespace", default="default")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.events import recent

        rows = [[e.id, e.key, e.version, json.dumps(e.value, default=str), e.sender,
                 _when(e.created_at, "milliseconds")]
                for e in recent(face.workspace.db, a.key, namespace=a.namespace,
                                limit=a.limit)]
        return Table(["id", "key", "version", "value", "sender", "time"], rows)

    return run


@command("send", "send a notification event (a JSON or text value) to KEY")
def _send(p: argparse.ArgumentParser) -> Run:
    p.add_argument("key")
    p.add_argument("value", help="JSON (e.g. '{\"auc\": 0.72}') or text")
    p.add_argument("--namespace", default="default")
    p.add_argument("--sender", default="user")

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.events import send_event

        try:
            value: Any = json.loads(a.value)
        except json.JSONDecodeError:
            value = a.value
        event = send_event(face.workspace.db, a.key, value, namespace=a.namespace,
                           sender=a.sender)
        return Message(f"event {event.key} version {event.version} = {a.value}")

    return run
