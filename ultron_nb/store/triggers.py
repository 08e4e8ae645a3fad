"""The trigger log and the scheduler's persisted state (cursor and rule state).

A trigger is one thing to do — start, restart or stop one node of one experiment — with an
idempotency key ``(experiment, node, edge, occurrence)`` unique in ``trigger_log``. Its
states: ``pending`` → ``claimed`` (being carried out) → ``done`` | ``failed``; a pending one
may be ``cancelled`` (a stop) or ``suspended`` (a stop with savepoints: pending again when the
experiment resumes). Every function takes an open connection so callers commit triggers with
the cursor that caused them in one transaction.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from ultron_nb.store.schema import scheduler_state, trigger_log

PENDING = "pending"
CLAIMED = "claimed"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
SUSPENDED = "suspended"


@dataclass(frozen=True)
class TriggerRow:
    id: int
    experiment: str
    node_name: str
    edge: str
    occurrence: str
    action: str
    state: str
    created_at: float


def _row(r: Any) -> TriggerRow:
    return TriggerRow(int(r.id), r.experiment, r.node_name, r.edge, r.occurrence, r.action,
                      r.state, float(r.created_at))


def add_trigger(conn: Connection, *, experiment: str, node: str, edge: str, occurrence: str,
                action: str, state: str = PENDING) -> bool:
    """Record a trigger (pending, or suspended) unless its idempotency key exists; True when
    added."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    stmt = dialect_insert(trigger_log).values(
        experiment=experiment, node_name=node, edge=edge[:255], occurrence=occurrence,
        action=action, state=state, created_at=time.time(),
    ).on_conflict_do_nothing(index_elements=[
        trigger_log.c.experiment, trigger_log.c.node_name, trigger_log.c.edge,
        trigger_log.c.occurrence])
    return bool(conn.execute(stmt).rowcount)


def claim(conn: Connection, trigger_id: int, *, to: str = DONE) -> bool:
    """Take a pending trigger (to ``done``, or ``claimed`` while it is carried out) inside
    the caller's transaction; False when it was taken, cancelled or suspended already
    (then its run must not happen)."""
    return conn.execute(
        update(trigger_log).where(trigger_log.c.id == trigger_id,
                                  trigger_log.c.state == PENDING).values(state=to)
    ).rowcount == 1


def finish(conn: Connection, trigger_id: int, state: str) -> None:
    """A pending or claimed trigger ends as ``state`` (done, failed, cancelled)."""
    conn.execute(update(trigger_log)
                 .where(trigger_log.c.id == trigger_id,
                        trigger_log.c.state.in_([PENDING, CLAIMED]))
                 .values(state=state))


def release_claims(conn: Connection) -> int:
    """Triggers left ``claimed`` by a scheduler that died mid-start become pending again
    (starts are idempotent: a job that did start is found and adopted)."""
    return conn.execute(update(trigger_log).where(trigger_log.c.state == CLAIMED)
                        .values(state=PENDING)).rowcount


def get(conn: Connection, trigger_id: int) -> TriggerRow | None:
    row = conn.execute(select(trigger_log).where(trigger_log.c.id == trigger_id)).first()
    return _row(row) if row else None


def pending(conn: Connection) -> list[TriggerRow]:
    """Pending triggers, oldest first."""
    return [_row(r) for r in conn.execute(
        select(trigger_log).where(trigger_log.c.state == PENDING).order_by(trigger_log.c.id))]


def last_window(conn: Connection, experiment: str, node: str) -> TriggerRow | None:
    """The latest boundary trigger (occurrence ``wm<ms>``) of a node that ran."""
    row = conn.execute(
        select(trigger_log).where(trigger_log.c.experiment == experiment,
                                  trigger_log.c.node_name == node,
                                  trigger_log.c.occurrence.like("wm%"),
                                  trigger_log.c.state == DONE)
        .order_by(trigger_log.c.id.desc()).limit(1)).first()
    return _row(row) if row else None


def of_experiment(conn: Connection, experiment: str, states: set[str] | None = None
                  ) -> list[TriggerRow]:
    query = select(trigger_log).where(trigger_log.c.experiment == experiment)
    if states:
        query = query.where(trigger_log.c.state.in_(sorted(states)))
    return [_row(r) for r in conn.execute(query.order_by(trigger_log.c.id))]


def hold_back(conn: Connection, experiment: str, *, suspend: bool,
              actions: tuple[str, ...] = ("start", "restart")) -> int:
    """An experiment stops: its pending starts are cancelled, or suspended (a stop with
    savepoints, undone by :func:`rearm`). Returns how many."""
    return conn.execute(
        update(trigger_log)
        .where(trigger_log.c.experiment == experiment, trigger_log.c.state == PENDING,
               trigger_log.c.action.in_(list(actions)))
        .values(state=SUSPENDED if suspend else CANCELLED)).rowcount


def rearm(conn: Connection, experiment: str, trigger_ids: list[int] | None = None) -> int:
    """Suspended triggers of ``experiment`` (or the given ones) become pending again."""
    stmt = update(trigger_log).where(trigger_log.c.experiment == experiment)
    if trigger_ids is not None:
        stmt = stmt.where(trigger_log.c.id.in_(trigger_ids),
                          trigger_log.c.state.in_([SUSPENDED, DONE, CLAIMED]))
    else:
        stmt = stmt.where(trigger_log.c.state == SUSPENDED)
    return conn.execute(stmt.values(state=PENDING)).rowcount


def suspend(conn: Connection, trigger_ids: list[int]) -> int:
    """Triggers whose runs a stop interrupted are suspended (they run again on resume)."""
    if not trigger_ids:
        return 0
    return conn.execute(update(trigger_log).where(trigger_log.c.id.in_(trigger_ids))
                        .values(state=SUSPENDED)).rowcount


def count(conn: Connection, experiment: str, state: str, *, edge: str | None = None) -> int:
    query = select(func.count()).select_from(trigger_log).where(
        trigger_log.c.experiment == experiment, trigger_log.c.state == state)
    if edge is not None:
        query = query.where(trigger_log.c.edge == edge)
    return int(conn.execute(query).scalar_one())


# ---------------------------------------------------------------- persisted state
def load_state(conn: Connection, name: str) -> dict[str, Any]:
    """A named JSON state (the scheduler's cursor and rule state, say); {} when none."""
    row = conn.execute(select(scheduler_state.c.value)
                       .where(scheduler_state.c.name == name)).first()
    return dict(row[0]) if row else {}


def save_state(conn: Connection, name: str, value: dict[str, Any]) -> None:
    data = json.loads(json.dumps(value))
    now = time.time()
    changed = conn.execute(update(scheduler_state).where(scheduler_state.c.name == name)
                           .values(value=data, updated_at=now)).rowcount
    if not changed:
        conn.execute(insert(scheduler_state).values(name=name, value=data, updated_at=now))
