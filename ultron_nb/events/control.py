"""Requests to the scheduler daemon, as events (``control/<experiment>``).

Experiments talk to the scheduler this way only — never by importing it — so a request sent
while no scheduler runs is carried out when one starts, and none is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ultron_nb.events.keys import SENDER_SCHEDULER, control_key
from ultron_nb.events.send import Event, send_event

if TYPE_CHECKING:
    from ultron_nb.store import Database


def request(db: Database, experiment: str, action: str, node: str | None = None) -> Event:
    """Ask the scheduler to ``start`` the experiment (its nodes that no start edge waits for
    and that never ran), or to ``start``/``restart``/``stop`` one ``node`` of it."""
    value: dict[str, Any] = {"action": action}
    if node:
        value["node"] = node
    return send_event(db, control_key(experiment), value, sender=SENDER_SCHEDULER)


def request_start(db: Database, experiment: str, node: str | None = None) -> Event:
    return request(db, experiment, "start", node)


def request_restart(db: Database, experiment: str, node: str) -> Event:
    return request(db, experiment, "restart", node)


def request_stop(db: Database, experiment: str, node: str) -> Event:
    return request(db, experiment, "stop", node)
