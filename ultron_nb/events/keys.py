"""The event keys ultron itself uses, and the ONE vocabulary of node and experiment states.

Every module that writes or reads a node's state, or builds an event key, uses these names;
nothing else spells them. Foreign words (Flink's job states, a user's ``"succeeded"``) become
a :class:`NodeState` through :func:`normalize` only.

Keys:

- ``status/<experiment>/<node>``: a run of a node changed state; the value is
  ``{"state": <NodeState>, "attempt": N, ...}`` (or a bare state from a user's tool);
- ``watermark/<experiment>/<node>``: a stream node's output watermark, epoch milliseconds;
- ``control/<experiment>``: a request to the scheduler (``{"action": "start" | "stop" |
  "resume" | "restart", "node": ...}``);
- ``model/<name>/version`` and ``model/<name>/alias/<alias>``: the model registry's changes;
- ``quality/<experiment>/<node>/<rule>``: a data-quality rule's violation.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any


class NodeState(StrEnum):
    """The state of a node of an experiment (and of the instance running it)."""

    WAITING = "waiting"  # defined, not started: waits for its trigger or for launch
    READY = "ready"  # a resource: its data is there to read
    SUBMITTING = "submitting"  # a start is under way (Flink has not confirmed the job yet)
    RUNNING = "running"
    RESTARTING = "restarting"  # Flink restarts the job after a failure (still active)
    STOPPING = "stopping"  # a stop (with or without savepoint) is under way
    FINISHED = "finished"  # a bounded run ended by itself, successfully
    FAILED = "failed"
    STOPPED = "stopped"  # stopped on purpose with a savepoint or by a stop edge: resumable
    CANCELED = "canceled"  # stopped on purpose without a savepoint
    LOST = "lost"  # the cluster no longer knows the job (restarted?)
    UNKNOWN = "unknown"  # the cluster does not answer


#: States in which a node's run goes on (or will, by itself).
ACTIVE = frozenset({NodeState.SUBMITTING, NodeState.RUNNING, NodeState.RESTARTING,
                    NodeState.STOPPING})
#: States a run ends in.
TERMINAL = frozenset({NodeState.FINISHED, NodeState.FAILED, NodeState.STOPPED,
                      NodeState.CANCELED, NodeState.LOST})

_ALIASES: dict[str, NodeState] = {
    # Flink job states
    "created": NodeState.RUNNING, "initializing": NodeState.RUNNING,
    "scheduled": NodeState.RUNNING, "reconciling": NodeState.RUNNING,
    "running": NodeState.RUNNING,
    "restarting": NodeState.RESTARTING, "failing": NodeState.RESTARTING,
    "finished": NodeState.FINISHED,
    "failed": NodeState.FAILED,
    "canceling": NodeState.STOPPING, "cancelling": NodeState.STOPPING,
    "canceled": NodeState.CANCELED, "cancelled": NodeState.CANCELED,
    "suspended": NodeState.STOPPED,
    # other tools' words
    "succeeded": NodeState.FINISHED, "success": NodeState.FINISHED, "done": NodeState.FINISHED,
    "error": NodeState.FAILED, "killed": NodeState.CANCELED,
}


def normalize(word: object) -> NodeState | None:
    """The :class:`NodeState` a state word means (Flink's, ours, a user's); None if unknown."""
    if word is None:
        return None
    text = str(word).strip().lower()
    try:
        return NodeState(text)
    except ValueError:
        return _ALIASES.get(text)


def is_active(state: object) -> bool:
    return normalize(state) in ACTIVE


def is_terminal(state: object) -> bool:
    return normalize(state) in TERMINAL


class ExperimentState(StrEnum):
    """An experiment's state, derived from its nodes (:func:`derive_experiment_state`)."""

    LAUNCHING = "launching"
    WAITING = "waiting"  # launched; its nodes wait for triggers
    RUNNING = "running"
    DEGRADED = "degraded"  # some nodes failed, others run
    FAILED = "failed"
    FINISHED = "finished"
    STOPPING = "stopping"
    STOPPED = "stopped"  # stopped with savepoints: resumable
    CANCELED = "canceled"


#: Experiment states the user ended; a derived state never overrides them.
ENDED_BY_USER = frozenset({ExperimentState.STOPPED, ExperimentState.CANCELED,
                           ExperimentState.STOPPING})


def derive_experiment_state(nodes: Iterable[object],
                            recorded: object = None) -> ExperimentState:
    """The experiment state from the states of all its nodes, of every kind.

    A stop the user asked for wins (shared jobs may run on for other experiments); otherwise:
    any node active → running (degraded when another failed); a launch that failed stays
    failed; all ended → finished when all finished, failed when any failed; nodes that wait
    (no run yet) → waiting.
    """
    if recorded in ENDED_BY_USER:
        return ExperimentState(str(recorded))
    states = [s for s in (normalize(n) for n in nodes) if s is not None]
    states = [s for s in states if s is not NodeState.READY]
    bad = {NodeState.FAILED, NodeState.LOST}
    if any(s in ACTIVE for s in states):
        return ExperimentState.DEGRADED if any(s in bad for s in states) \
            else ExperimentState.RUNNING
    if recorded == ExperimentState.FAILED:
        return ExperimentState.FAILED  # a launch rolled back stays failed
    if any(s is NodeState.UNKNOWN for s in states):
        return ExperimentState(str(recorded)) if recorded else ExperimentState.RUNNING
    if any(s is NodeState.WAITING for s in states):
        return ExperimentState.DEGRADED if any(s in bad for s in states) \
            else ExperimentState.WAITING
    if not states:
        return ExperimentState.WAITING
    if any(s in bad for s in states):
        return ExperimentState.FAILED
    if all(s is NodeState.FINISHED for s in states):
        return ExperimentState.FINISHED
    if any(s is NodeState.STOPPED for s in states):
        return ExperimentState.STOPPED
    return ExperimentState.CANCELED


# ---------------------------------------------------------------- keys
def status_key(experiment: str, node: str) -> str:
    """A node's state: ``status/<experiment>/<node>``."""
    return f"status/{experiment}/{node}"


def watermark_key(experiment: str, node: str) -> str:
    """A stream node's watermark (epoch ms): ``watermark/<experiment>/<node>``."""
    return f"watermark/{experiment}/{node}"


def control_key(experiment: str) -> str:
    """Requests to the scheduler about an experiment: ``control/<experiment>``."""
    return f"control/{experiment}"


def model_version_key(model: str) -> str:
    """A new READY version of a registered model: ``model/<name>/version``."""
    return f"model/{model}/version"


def model_alias_key(model: str, alias: str) -> str:
    """An alias of a registered model was set, moved or deleted."""
    return f"model/{model}/alias/{alias}"


def watermark_ms(value: Any) -> int | None:
    """Epoch milliseconds of a watermark event value (a number, numeric text, or an object
    with ``watermark``); None when absent or before 1970 (Flink's "no watermark yet")."""
    if isinstance(value, dict):
        value = value.get("watermark", value.get("ms"))
    if isinstance(value, bool) or value is None:
        return None
    try:
        ms = int(float(value))
    except (TypeError, ValueError):
        return None
    return ms if ms >= 0 else None


def quality_key(experiment: str, node: str, rule: str) -> str:
    """A violation of a node's data-quality rule."""
    return f"quality/{experiment}/{node}/{rule}"


def quality_keys(experiment: str) -> str:
    """The pattern of every data-quality violation of an experiment."""
    return f"quality/{experiment}/*"


def split_key(key: str) -> tuple[str, ...]:
    """``"status/e/n"`` → ``("status", "e", "n")`` (experiment names hold no ``/``)."""
    return tuple(key.split("/"))


#: Senders of the events ultron sends itself.
SENDER_FLINK = "ultron.flink"
SENDER_SCHEDULER = "ultron.scheduler"
SENDER_RUNNER = "ultron.runner"
SENDER_MODELS = "ultron.models"
