"""Phase 2 of a launch (:func:`ultron_nb.experiments.launch._submit_all`), its logic alone: the
jobs of an unbounded launch are submitted side by side, and one failed submission rolls back
every job the launch started. (Real launches of multi-node flows on a local cluster are in
``test_lifecycle.py`` and the notebooks; this fakes only the runner's submission.)"""

from __future__ import annotations

import importlib
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from ultron_nb.errors import ClusterError

# The module (the package exports its ``launch`` function under the same name).
launch_module = importlib.import_module("ultron_nb.experiments.launch")


class FakeFlink:
    def __init__(self, fail: str | None, together: int):
        self.fail = fail
        self.barrier = threading.Barrier(together, timeout=10)
        self.submitted: list[str] = []

    def submit(self, item: Any, url: str, *, savepoint: str | None = None) -> tuple[int, str]:
        self.barrier.wait()  # returns only once ``together`` submissions are in flight
        if item.node == self.fail:
            raise ClusterError(f"node {item.node!r}: submission to {url} failed: refused")
        self.submitted.append(item.node)
        return len(self.submitted), f"job-{item.node}"


def run(flink: FakeFlink, nodes: list[str], monkeypatch: pytest.MonkeyPatch
        ) -> list[Any]:
    rolled: list[Any] = []
    monkeypatch.setattr(launch_module, "_roll_back",
                        lambda ws, fl, url, exp, submitted, *, failed_node:
                        rolled.append((list(submitted), failed_node)))
    compiled = {n: SimpleNamespace(node=n, depends_on=[]) for n in nodes}
    to_run = [SimpleNamespace(node=n) for n in nodes]
    out = launch_module._submit_all(None, flink, None, compiled, to_run,  # type: ignore[arg-type]
                                    "e1", "http://127.0.0.1:1", bounded=False, timeout=5)
    return [out, rolled]


def test_the_jobs_of_a_launch_are_submitted_side_by_side(monkeypatch) -> None:
    flink = FakeFlink(None, together=3)  # a submission in sequence would wait forever
    out, rolled = run(flink, ["a", "b", "c"], monkeypatch)
    assert out == [("a", "job-a"), ("b", "job-b"), ("c", "job-c")]  # in topological order
    assert rolled == []


def test_one_failed_submission_rolls_back_every_job_the_launch_started(monkeypatch) -> None:
    flink = FakeFlink("b", together=3)
    with pytest.raises(ClusterError) as info:
        run(flink, ["a", "b", "c"], monkeypatch)
    assert str(info.value) == ("node 'b': submission to http://127.0.0.1:1 failed: refused — "
                               "launch of 'e1' rolled back (cancelled a, c)")
    assert sorted(flink.submitted) == ["a", "c"]
