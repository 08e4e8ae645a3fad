"""What runs one node of one experiment: the runner of its kind, and the run's typed spec.

A :class:`NodeRunner` knows how to start, stop and report one node instance of its kind
(Flink SQL jobs, Python steps, DuckDB queries). What a kind can do beyond that is declared
as class attributes with defaults — never probed with ``getattr`` — so callers (the
experiment lifecycle, the scheduler) ask the runner, not the kind:

- ``supports_savepoints``: ``stop(savepoint=True)`` returns a savepoint a later ``start``
  restores (Flink);
- ``runs_per_trigger``: each start is one bounded run fired by a trigger, carried out by the
  scheduler (Python, DuckDB); otherwise a start launches a long-running job;
- ``claims_triggers``: the run claims its trigger itself, in the transaction that records
  it, so each trigger runs exactly once even if the scheduler dies mid-launch;
- ``needs_cluster``: it needs the Flink cluster of the experiment.

Runners of ``runs_per_trigger`` kinds also say how many runs of one instance are under way
(:meth:`NodeRunner.active_runs`) and may be at once (:meth:`NodeRunner.run_limit`); the
scheduler starts a trigger's run only below the limit.

:class:`RunSpec` is everything a runner gets about one run. The registry
(:mod:`ultron_nb.runners.registry`) maps kinds to runner classes by module path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ultron_nb.events.keys import ACTIVE, NodeState

if TYPE_CHECKING:
    from ultron_nb.flow import Node
    from ultron_nb.workspace import Workspace


@dataclass(frozen=True)
class TriggerRef:
    """What fired a run: the trigger's id, its edge and occurrence, and the payload —
    ``window_start``/``window_end`` (epoch ms) of a boundary, ``event`` of an event edge,
    ``tick`` of a periodic one."""

    id: int
    edge: str = ""
    occurrence: str = ""
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def window(self) -> tuple[int, int] | None:
        if "window_start" in self.payload:
            return int(self.payload["window_start"]), int(self.payload["window_end"])
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "edge": self.edge, "occurrence": self.occurrence,
                **self.payload}


@dataclass(frozen=True)
class RunSpec:
    """One node of one experiment, as its runner gets it.

    ``node`` is the node's definition (the flow version the experiment runs), ``params`` its
    effective parameters, ``inputs`` the recorded outputs of its upstream instances (node →
    ``node_instances.output``), ``upstream`` their instance ids, ``output`` its own recorded
    output, ``target`` the Flink cluster of the experiment, ``trigger`` what fired the run.
    """

    experiment: str
    node: Node
    instance_id: str
    flow: str
    flow_version: int
    params: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    upstream: dict[str, str] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    trigger: TriggerRef | None = None

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def kind(self) -> str:
        return str(self.node.kind)

    @property
    def label(self) -> str:
        return f"{self.experiment}.{self.node.name}"


@dataclass
class NodeReport:
    """How one node instance is doing, as its runner sees it (one vocabulary of states)."""

    state: NodeState
    job_id: str | None = None
    web_url: str | None = None
    watermark_ms: int | None = None
    error: str | None = None
    attempt: int | None = None
    savepoint: str | None = None


class NodeRunner(ABC):
    """Starts, stops and reports node instances of one kind (see the module docstring)."""

    kind: ClassVar[str]
    supports_savepoints: ClassVar[bool] = False
    runs_per_trigger: ClassVar[bool] = False
    claims_triggers: ClassVar[bool] = False
    needs_cluster: ClassVar[bool] = False

    def __init__(self, ws: Workspace):
        self.ws = ws

    def check(self, spec: RunSpec) -> None:  # noqa: B027 - optional: most kinds have no check
        """Refuse a node this runner cannot run, before anything is recorded or started."""

    def planned_output(self, spec: RunSpec) -> dict[str, Any]:
        """What a launch records as the output of ``spec`` before it ever runs."""
        return {}

    @abstractmethod
    def start(self, spec: RunSpec, *, savepoint: str | None = None) -> None:
        """Start ``spec`` (restoring ``savepoint`` when the runner supports savepoints)."""

    @abstractmethod
    def stop(self, spec: RunSpec, *, savepoint: bool = False, timeout: float = 120.0
             ) -> str | None:
        """Stop ``spec``'s running job or run; with ``savepoint``, the savepoint's path."""

    @abstractmethod
    def report(self, spec: RunSpec) -> NodeReport | None:
        """The instance's state now (None: it never ran)."""

    def state(self, spec: RunSpec) -> NodeState | None:
        report = self.report(spec)
        return report.state if report else None

    def active_runs(self, spec: RunSpec) -> int:
        """How many runs of ``spec``'s instance are under way (a job counts as one)."""
        return 1 if self.state(spec) in ACTIVE else 0

    def run_limit(self, spec: RunSpec) -> int:
        """How many runs of ``spec``'s instance may be under way at once: a trigger of a
        ``runs_per_trigger`` runner waits while that many are."""
        return 1

    def warm_up(self) -> None:  # noqa: B027 - optional
        """Start what makes later starts fast (the scheduler calls it when it starts)."""

    def maintain(self) -> None:  # noqa: B027 - optional housekeeping
        """Periodic housekeeping (the scheduler calls it every few seconds)."""

    def close(self) -> None:  # noqa: B027 - optional
        """Free what the runner holds (clients, child processes it still tracks)."""
