"""Runners: what runs one node of one experiment, one module per node kind on one base.

:class:`~ultron_nb.runners.base.NodeRunner` (with its declared capabilities) and
:class:`~ultron_nb.runners.base.RunSpec`; :mod:`~ultron_nb.runners.registry` maps kinds to
runners by module path; :mod:`~ultron_nb.runners.process` is the child-process entry point of
scheduler-run nodes; :class:`~ultron_nb.runners.context.NodeContext` is what a Python node's
function receives.
"""

from ultron_nb.runners.base import NodeReport, NodeRunner, RunSpec, TriggerRef
from ultron_nb.runners.context import NodeContext
from ultron_nb.runners.registry import RUNNERS, Runners, runner_class

__all__ = ["RUNNERS", "NodeContext", "NodeReport", "NodeRunner", "RunSpec", "Runners",
           "TriggerRef", "runner_class"]
