"""Reference counts of shared instances as a state machine (hypothesis), on a real store.

Launches, clones (sharing running instances), failed clones (rolled back), stops and
relaunches in any order; the model is a plain dict of who holds what. Invariants after every
step: an experiment that is not stopped only holds running instances (no job cancelled
under it), and a running instance is held by some experiment (nothing leaks).
"""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from ultron_nb.config import Settings
from ultron_nb.events.keys import NodeState
from ultron_nb.experiments.lifecycle import _unheld_jobs
from ultron_nb.store import experiments as repo
from ultron_nb.workspace import Workspace


class Holds(RuleBasedStateMachine):
    experiments = Bundle("experiments")

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.ws = Workspace(Settings(home=Path(self.tmp.name) / ".ultron"))
        self.n = 0
        self.held: dict[str, set[str]] = {}  # model: experiment → instances it holds
        self.stopped: set[str] = set()
        self.running: set[str] = set()  # model: instances whose job runs

    def teardown(self) -> None:
        self.ws.db.dispose()
        self.tmp.cleanup()

    # ------------------------------------------------------------------ actions
    def _record(self, name: str, new: int, shared: list[str]) -> None:
        with self.ws.db.write() as conn:
            exp = repo.create_experiment(conn, name=name, flow_name="f", flow_version=1,
                                         params={}, label=name, target="http://c:1")
            for k in range(new):
                inst = f"{name}_n{k}"
                repo.save_instance(conn, repo.InstanceRow(
                    id=inst, identity=f"id{k}", target="http://c:1", node_name=f"n{k}",
                    flow_name="f", flow_version=1, params={}, upstream={}, output={},
                    state=NodeState.RUNNING))
                repo.link_node(conn, exp.id, f"n{k}", inst, None)
                repo.add_job(conn, instance_id=inst, engine="flink", external_id=f"j-{inst}",
                             target="http://c:1", state=NodeState.RUNNING)
                self.running.add(inst)
            for k, inst in enumerate(shared):
                repo.link_node(conn, exp.id, f"s{k}", inst, repo.owner_of(conn, inst))
        self.held[name] = {f"{name}_n{k}" for k in range(new)} | set(shared)

    def _shareable(self) -> list[str]:
        """Running instances someone holds (what a launch's plan would share)."""
        ids = sorted(self.running)
        with self.ws.db.read() as conn:
            holders = repo.holder_names(conn, ids)
        return [i for i in ids if holders.get(i)]

    @rule(target=experiments, new=st.integers(1, 3))
    def launch(self, new: int) -> str:
        self.n += 1
        name = f"e{self.n}"
        self._record(name, new, [])
        return name

    @rule(target=experiments, new=st.integers(0, 2), pick=st.randoms())
    def clone(self, new: int, pick: object) -> str:
        self.n += 1
        name = f"e{self.n}"
        candidates = self._shareable()
        shared = [i for i in candidates if pick.random() < 0.6]  # type: ignore[attr-defined]
        self._record(name, new, shared)
        return name

    @rule(pick=st.randoms())
    def failed_clone(self, pick: object) -> None:
        """A clone whose launch is rolled back: it lets go of everything at once."""
        self.n += 1
        name = f"e{self.n}"
        shared = [i for i in self._shareable() if pick.random() < 0.6]  # type: ignore[attr-defined]
        self._record(name, 0, shared)
        self.stop_experiment(name)

    @rule(name=experiments)
    def stop(self, name: str) -> None:
        if name not in self.stopped:
            self.stop_experiment(name)

    def stop_experiment(self, name: str) -> None:
        with self.ws.db.read() as conn:
            exp = repo.get_experiment(conn, name)
        for job in _unheld_jobs(self.ws, exp):  # what lifecycle.stop stops
            with self.ws.db.write() as conn:
                assert repo.update_job(conn, job.id, only_if={NodeState.RUNNING},
                                       state=NodeState.CANCELED, ended_at=time.time())
            self.running.discard(job.instance_id)
        with self.ws.db.write() as conn:
            repo.set_experiment_state(conn, name, "canceled")
        self.stopped.add(name)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def no_job_is_cancelled_under_a_holder(self) -> None:
        for name, held in self.held.items():
            if name not in self.stopped:
                assert held <= self.running, (name, held - self.running)

    @invariant()
    def nothing_leaks(self) -> None:
        live = set().union(*(h for n, h in self.held.items() if n not in self.stopped)) \
            if self.held else set()
        assert self.running <= live, self.running - live

    @invariant()
    def the_store_agrees_with_the_model(self) -> None:
        with self.ws.db.read() as conn:
            holders = repo.holder_names(conn, sorted(set().union(*self.held.values())
                                                     if self.held else set()))
        for inst, names in holders.items():
            want = sorted((n for n, h in self.held.items()
                           if inst in h and n not in self.stopped), key=lambda n: int(n[1:]))
            assert names == want, (inst, names, want)


Holds.TestCase.settings = settings(max_examples=20, stateful_step_count=20, deadline=None)
test_reference_counts_hold_under_any_order_of_launches_clones_and_stops = Holds.TestCase
