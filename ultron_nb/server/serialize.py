"""Library objects as the JSON the side panel reads, with credentials masked.

Every payload goes through :func:`scrub` last: a password in any URL (``scheme://user:pw@``)
becomes ``***``, and so does the value of a ``token``/``password``/``secret``/``key`` query
parameter — in targets, links, error messages and event values alike. Links to Flink's web
UI lose their user info entirely (a browser would otherwise send it on).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s:/@?#]*):"
                       r"(?P<password>[^\s/@?#]*)@")
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&](?:token|access_token|password|passwd|secret|api_?key|key)=)[^&#\s\"']*",
    re.IGNORECASE)
_ANY_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@?#]*@")


def mask_text(text: str) -> str:
    """``text`` with URL passwords and secret query values replaced by ``***``."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(r"\g<scheme>\g<user>:***@", text)
    return _SECRET_PARAM.sub(r"\g<name>***", text)


def link(url: str | None) -> str | None:
    """A URL for the browser to open: no user info, secret query values masked."""
    if not url:
        return None
    return mask_text(_ANY_USERINFO.sub(r"\g<scheme>", url))


def scrub(value: Any) -> Any:
    """``value`` (JSON-able) with :func:`mask_text` applied to every string in it."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {str(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


# ------------------------------------------------------------------ flows
def flow_summary(f: Any) -> dict[str, Any]:
    return {"name": f.name, "version": f.version, "nodes": f.nodes, "change": f.change,
            "updated": f.updated_at}


def node(n: Any) -> dict[str, Any]:
    return {
        "name": n.name,
        "kind": str(n.kind),
        "label": n.label,
        "stream": bool(n.is_stream),
        "inputs": list(n.data_inputs()),
        "params": n.param_dict,
        "triggers": [t.label for t in n.triggers],
        "description": n.description,
    }


def flow(f: Any, history: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": f.name,
        "version": f.version,
        "nodes": [node(f[n]) for n in f.topological()],
        "versions": [{"version": h["version"], "change": h["change"],
                      "created": h["created_at"], "nodes": h["nodes"]} for h in history],
    }


# ------------------------------------------------------------------ experiments
def experiment_row(e: Any) -> dict[str, Any]:
    return {"name": e.name, "flow": e.flow_name, "version": e.flow_version, "state": e.state,
            "label": e.label, "target": e.target, "parent": e.parent,
            "created": e.created_at, "updated": e.updated_at}


def node_status(n: Any) -> dict[str, Any]:
    return {
        "node": n.node,
        "kind": n.kind,
        "state": n.state,
        "instance": n.instance,
        "job_id": n.job_id,
        "web_url": link(n.web_url),
        "watermark_ms": n.watermark_ms,
        "watermark": n.watermark_text or None,
        "error": n.error,
        "shared_from": n.shared_from,
        "savepoint": n.savepoint,
        "attempt": n.attempt,
    }


def experiment_status(st: Any) -> dict[str, Any]:
    nodes = [node_status(n) for n in st.nodes]
    return {
        "name": st.name,
        "flow": st.flow,
        "version": st.flow_version,
        "label": st.label,
        "target": st.target,
        "state": st.state,
        "message": st.message,
        "params": {str(k): v for k, v in st.params.items()},
        "nodes": nodes,
        "jobs": [{"node": n["node"], "job_id": n["job_id"], "state": n["state"],
                  "web_url": n["web_url"], "shared_from": n["shared_from"]}
                 for n in nodes if n["job_id"]],
        "flink_web": link(f"{st.target.rstrip('/')}/#/overview"),
    }


def savepoint_choice(c: Any) -> dict[str, Any]:
    sp = c.savepoint
    return {"id": sp.id, "experiment": sp.experiment, "node": sp.node_name, "taken": c.taken,
            "taken_ms": int(sp.created_at * 1000), "flow_version": sp.flow_version,
            "restored_from": sp.parent, "exists": c.exists, "location": c.location}


#: The quality tables' column titles that are no JSON key as they are.
_QUALITY_KEYS = {"rule text": "text", "last window": "window"}


def quality_report(r: Any) -> dict[str, Any]:
    """Rules with their last measurement, violations (newest last), failing nodes and the
    ones to look at first (failing, with no failing node upstream)."""
    def rows(table: Any) -> list[dict[str, Any]]:
        keys = [_QUALITY_KEYS.get(c, c) for c in table.columns]
        return [dict(zip(keys, row, strict=True)) for row in table.rows]

    rules, violations = rows(r.table), rows(r.violations)
    return {"experiment": r.experiment, "rules": rules, "violations": violations,
            "failing": dict(r.failing), "look_first": list(r.look_first)}


# ------------------------------------------------------------------ events
def event(e: Any) -> dict[str, Any]:
    return {"id": e.id, "key": e.key, "value": e.value, "version": e.version,
            "namespace": e.namespace, "sender": e.sender, "created": e.created_at}


# ------------------------------------------------------------------ clone
def clone_plan(p: Any) -> dict[str, Any]:
    return {
        "source": p.source,
        "name": p.name,
        "overrides": dict(p.overrides),
        "nodes": [{"node": r[0], "plan": r[1], "instance": r[2], "why": r[3], "params": r[4]}
                  for r in p.rows()],
        "launches": list(p.launches),
        "restores": {n: sp.id for n, sp in p.restores.items()},
    }


def clone_result(r: Any) -> dict[str, Any]:
    if not hasattr(r, "status"):  # a dry run: the plan only
        return {"dry_run": True, "plan": clone_plan(r)}
    return {"dry_run": False, "plan": clone_plan(r.plan), "status": experiment_status(r.status)}


def experiment_diff(d: Any) -> dict[str, Any]:
    return {"a": d.a, "b": d.b,
            "nodes": [{"node": r[0], "a": r[1], "b": r[2], "difference": r[3]} for r in d.rows]}
