"""Event keys of the model registry, and the scope rule that isolates clones. Pure.

The scheduler's registry watcher sends one event per change of the MLflow registry:

- ``model/<name>/version``: a new READY version; value ``{"version": n, "run_id": ...,
  "metrics": {...}, "tags": {...}, "experiment": <lineage experiment or null>}``.
- ``model/<name>/alias/<alias>``: an alias set, moved (a rollback is a move) or deleted;
  value ``{"version": n | null, "previous": m | null, "change": "set" | "move" | "delete"}``.

**Scopes** (clone isolation). The aliases a node sets belong to the experiment that runs
the node: a *root* experiment (one that is no clone) sets the plain alias (``champion``),
a clone ``lr2`` sets ``champion--lr2``. So a clone's training never moves its parent's
aliases unless someone asks for it by name (the ``model promote`` verb, or a node passing
the parent's experiment). Readers resolve an alias through the experiment's *scope chain*
(itself, its parent, ..., the root): a clone that has not promoted a version of its own
serves its parent's champion.

Edges follow the same chain. An edge ``--on-model NAME`` of experiment E fires on versions
whose lineage experiment is in E's chain, or that carry no lineage (registered by another
MLflow client): the parent's validate node never sees a clone's candidates. An edge
``--on-model NAME --alias A`` fires on moves of ``A`` in every scope of E's chain.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ultron_nb.events.keys import model_alias_key, model_version_key

PREFIX = "model/"
SCOPE_SEP = "--"  # MLflow aliases allow only [A-Za-z0-9_-]
_NOT_ALIAS = re.compile(r"[^\w\-]")


#: The keys themselves are spelled once, in :mod:`ultron_nb.events.keys`.
version_key = model_version_key
alias_key = model_alias_key


def parse_key(key: str) -> tuple[str, str | None] | None:
    """``(model name, alias or None)`` of a model event key; None for other keys."""
    if not key.startswith(PREFIX):
        return None
    rest = key[len(PREFIX):]
    if rest.endswith("/version") and len(rest) > len("/version"):
        return rest[: -len("/version")], None
    name, sep, alias = rest.rpartition("/alias/")
    if sep and name and alias and "/" not in alias:
        return name, alias
    return None


def scope_suffix(experiment: str) -> str:
    """The alias suffix of ``experiment``'s scope (``--<name>``, characters MLflow refuses
    in an alias replaced by ``_``)."""
    return SCOPE_SEP + _NOT_ALIAS.sub("_", experiment)


def scoped_alias(alias: str, scope: str | None) -> str:
    """The registry alias of ``alias`` in ``scope`` (None: a root experiment, or a user)."""
    return alias if scope is None else alias + scope_suffix(scope)


def scope_chain(experiment: str, parents: dict[str, str | None]) -> tuple[str, ...]:
    """``experiment``, its parent, ..., its root (``parents``: experiment → parent)."""
    chain = [experiment]
    while (parent := parents.get(chain[-1])) and parent not in chain:
        chain.append(parent)
    return tuple(chain)


def alias_scopes(chain: Sequence[str]) -> list[str | None]:
    """The scopes an alias of a node of ``chain[0]`` resolves through, nearest first: each
    clone of the chain, then the root's plain alias (None)."""
    return [*chain[:-1], None] if chain else [None]


def subscribed_keys(key: str, chain: Sequence[str]) -> list[str]:
    """The event keys an edge on ``key`` of experiment ``chain[0]`` listens to: an alias
    key in every scope of the chain; any other key as it is."""
    parsed = parse_key(key)
    if parsed is None or parsed[1] is None or len(chain) <= 1:
        return [key]
    name, alias = parsed
    return [alias_key(name, scoped_alias(alias, scope)) for scope in alias_scopes(chain)]


def in_scope(key: str, value: Any, chain: Sequence[str]) -> bool:
    """Does a model event concern experiment ``chain[0]``? A version event does when its
    lineage experiment is in the chain or absent (another client registered it); every
    other event does."""
    parsed = parse_key(key)
    if parsed is None or parsed[1] is not None or not chain:
        return True
    experiment = value.get("experiment") if isinstance(value, dict) else None
    return experiment is None or experiment in chain


def occurrence(edge_key: str, event_key: str, version: int) -> str:
    """A trigger's occurrence for an event: ``v<n>``, or ``v<n>@<key>`` when the event's
    key is not the edge's own (an alias of another scope)."""
    return f"v{version}" if event_key == edge_key else f"v{version}@{event_key}"


def parse_occurrence(text: str, edge_key: str) -> tuple[str, int] | None:
    """``(event key, version)`` of an occurrence made by :func:`occurrence`."""
    head, _, key = text.partition("@")
    if not head.startswith("v") or not head[1:].isdigit():
        return None
    return (key or edge_key), int(head[1:])


__all__ = [
    "SCOPE_SEP",
    "alias_key",
    "alias_scopes",
    "in_scope",
    "occurrence",
    "parse_key",
    "parse_occurrence",
    "scope_chain",
    "scope_suffix",
    "scoped_alias",
    "subscribed_keys",
    "version_key",
]
