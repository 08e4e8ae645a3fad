"""Content identity: a stable hash of what a node computes.

The identity of a node covers its normalised definition (SQL without comments and with
collapsed whitespace; Python by its syntax tree; resource columns), its effective parameters,
its triggers, the identities of the nodes it reads, and — for a node triggered by a model
(``--on-model NAME``) — the identities of the nodes of the flow that register NAME: a clone
that retrains gets its own evaluate, validate and serve. Two nodes with the same identity
produce the same output, so an experiment may share the running instance of the other.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ultron_nb.flow.graph import Flow
from ultron_nb.flow.nodes import Kind, Node
from ultron_nb.flow.sqltext import normalize_sql, substitute

IDENTITY_VERSION = 1


def _canonical_body(node: Node, params: Mapping[str, str]) -> str:
    if node.kind in (Kind.FLINK, Kind.DUCKDB):
        return normalize_sql(substitute(node.body, dict(params)))
    if node.kind is Kind.PYTHON:
        try:
            tree = ast.parse(node.body)
        except SyntaxError:
            return node.body
        # Docstrings are comments too: drop them so editing one keeps the identity.
        for item in ast.walk(tree):
            body = getattr(item, "body", None)
            if (
                isinstance(body, list)
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                body.pop(0)
        return ast.dump(tree, annotate_fields=False, include_attributes=False)
    return ""


def _normalise_watermark(text: str | None) -> str | None:
    return " ".join(text.lower().split()) if text else None


def definition(node: Node, params: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The part of a node that its identity covers, in canonical form."""
    effective = dict(node.params)
    effective.update(params or {})
    return {
        "v": IDENTITY_VERSION,
        "name": node.name,
        "kind": str(node.kind),
        "mode": str(node.mode) if node.mode else None,
        "body": _canonical_body(node, effective),
        "inputs": sorted(node.inputs),
        "params": sorted(effective.items()),
        "options": sorted(node.options),
        "resource_type": str(node.resource_type) if node.resource_type else None,
        "columns": [[c.name, c.type] for c in node.columns],
        "time_column": node.time_column,
        "watermark": _normalise_watermark(node.watermark),
        "key": node.key,
        "function": node.function,
        "bounded": node.bounded,
        "triggers": sorted(
            json.dumps(t.to_dict(), sort_keys=True) for t in node.triggers
        ),
        **({"registers": sorted(node.registers)} if node.registers else {}),
    }


def identities(
    flow: Flow, params: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, str]:
    """Identity (hex sha256) of every node of a valid flow.

    ``params`` maps node names to effective parameters (see :meth:`Flow.effective_params`).
    """
    params = params or {}
    result: dict[str, str] = {}
    for name in flow.topological():
        node = flow[name]
        payload: dict[str, Any] = {
            "def": definition(node, params.get(name)),
            "upstream": sorted((ref, result[ref]) for ref in node.data_inputs()),
        }
        models = flow.model_inputs(name)
        if models:  # (absent otherwise: identities of flows without model edges stay)
            payload["models"] = sorted((ref, result[ref]) for ref in models)
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        result[name] = hashlib.sha256(text.encode()).hexdigest()
    return result
