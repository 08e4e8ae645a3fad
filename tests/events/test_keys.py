"""The one vocabulary of states, and an experiment's state from all its nodes."""

from __future__ import annotations

import pytest

from ultron_nb.events.keys import (
    ExperimentState,
    NodeState,
    derive_experiment_state,
    normalize,
)


@pytest.mark.parametrize(("word", "state"), [
    ("RUNNING", NodeState.RUNNING), ("created", NodeState.RUNNING),
    ("CANCELLING", NodeState.STOPPING), ("canceled", NodeState.CANCELED),
    ("FAILING", NodeState.RESTARTING), ("succeeded", NodeState.FINISHED),
    ("stopped", NodeState.STOPPED), ("nonsense", None), (None, None),
])
def test_foreign_words_become_one_state(word: object, state: NodeState | None) -> None:
    assert normalize(word) is state


@pytest.mark.parametrize(("nodes", "recorded", "expected"), [
    # every node of every kind counts: Python nodes that all finished → finished
    (["ready", "finished", "finished"], "waiting", ExperimentState.FINISHED),
    # a stream job runs, a Python node waits for its window → running
    (["ready", "running", "waiting"], "running", ExperimentState.RUNNING),
    # a node failed while others run → degraded, not "failed", not "running"
    (["running", "failed", "finished"], "running", ExperimentState.DEGRADED),
    (["failed", "finished"], "running", ExperimentState.FAILED),
    # what the user ended stays ended, whatever shared jobs do for others
    (["running", "waiting"], "stopped", ExperimentState.STOPPED),
    (["running"], "canceled", ExperimentState.CANCELED),
    # a launch rolled back stays failed
    (["canceled", "canceled"], "failed", ExperimentState.FAILED),
    (["waiting", "waiting"], "launching", ExperimentState.WAITING),
    (["unknown", "waiting"], "running", ExperimentState.RUNNING),  # Flink does not answer
])
def test_an_experiments_state_comes_from_all_its_nodes(
        nodes: list[str], recorded: str, expected: ExperimentState) -> None:
    assert derive_experiment_state(nodes, recorded) is expected
