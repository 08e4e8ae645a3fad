"""``clone SRC NEW --from-savepoint ID``: a clone branched from a savepoint of a stopped
experiment, on a real cluster — the CTR link (its label join branched) and the rides flow
(the first of three Flink nodes in a chain branched, the others afresh on its new output).

What the parent wrote up to its savepoint and what the branch writes after it are, together,
exactly an undisturbed run: nothing lost, nothing twice at the branch point. The branch
never touches the parent's folder (the part files the parent's sink was writing stay the
parent's, to resume), and the parent resumes exactly. Bad ids are refused in one line naming
the flag and the savepoint or node, with nothing recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.services.flink_flows import (
    check_label_join,
    define_ctr_flow,
    topic_rows,
    wait_for,
    watermark_at_least,
)
from tests.support.waiting import wait_until
from ultron_nb import experiments as ex
from ultron_nb.errors import ConfigError, NotFoundError
from ultron_nb.services.clone import clone
from ultron_nb.services.datagen import gen_clicklog, parse_ts
from ultron_nb.store import experiments as repo
from ultron_nb.store import savepoints as sp_repo

from .rides import T0, Rides, compare, define_rides, output, truth

pytestmark = [pytest.mark.flink, pytest.mark.slow]


def savepoints_of(ws: Any, name: str) -> dict[str, Any]:
    with ws.db.read() as conn:
        return {s.node_name: s for s in sp_repo.of_experiments(conn, [name])}


def folder_listing(ws: Any, experiment: str, node: str) -> dict[str, int]:
    """Every file of a node's output folder (names and sizes), hidden ones included."""
    folder = Path(ex.status(ws, experiment)[node].output or "")
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")
            if p.is_file()}


def experiment_names(ws: Any) -> set[str]:
    with ws.db.read() as conn:
        return {e.name for e in repo.list_experiments(conn)}


def test_the_ctr_link_branched_from_a_savepoint_continues_exactly(
        scheduled_workspace: Any) -> None:
    ws = scheduled_workspace
    for _ in range(3):  # 15 minutes (the join's output watermark trails by its 10)
        gen_clicklog(ws.settings, rate=20, duration=300, partitions=4, seed=11,
                     flush_clicks=False)
    define_ctr_flow(ws)
    ex.launch(ws, "ctr", name="a")
    wait_for(watermark_at_least(ws, "a", "label_join", "2025-01-01 00:02:00"), 240)
    ex.stop(ws, "a", savepoint=True)
    before = ex.preview(ws, "label_join", experiment="a", limit=10**7)
    parent_files = folder_listing(ws, "a", "label_join")
    sps = savepoints_of(ws, "a")
    assert sorted(sps) == ["ctr_minute", "label_join"]

    # Refused in one line, nothing recorded.
    known = experiment_names(ws)
    with pytest.raises(NotFoundError, match=r"^--from-savepoint 99999: no such savepoint"):
        clone(ws, "a", "b", from_savepoints=[99999])
    with pytest.raises(ConfigError, match=r"^--from-savepoint \d+: node 'ctr_minute' reads "
                                          r"'label_join', which the clone launches anew"):
        clone(ws, "a", "b", from_savepoints=[sps["ctr_minute"].id])
    with pytest.raises(ConfigError, match="already starts from savepoint"):
        clone(ws, "a", "b", from_savepoints=[sps["label_join"].id] * 2)
    assert experiment_names(ws) == known

    plan = clone(ws, "a", "b", from_savepoints=[sps["label_join"].id], dry_run=True)
    rows = {r[0]: r[1] for r in plan.rows()}
    assert rows["label_join"] == f"new, from savepoint {sps['label_join'].id}"
    assert rows["ctr_minute"] == "new"
    assert any("branched from savepoints" in n for n in plan.notes)
    clone(ws, "a", "b", from_savepoints=[sps["label_join"].id])
    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, "b")
        views = {v.member.node_name: v for v in repo.node_views(conn, exp.id)}
    assert views["label_join"].job.savepoint == sps["label_join"].location
    assert views["ctr_minute"].job.savepoint is None

    for last in (False, True):  # 10 more minutes while the branch runs
        gen_clicklog(ws.settings, rate=20, duration=300, partitions=4, seed=11,
                     flush_clicks=last)
    st = wait_for(watermark_at_least(ws, "b", "label_join", "2025-01-01 00:12:00"), 300)
    # The parent's rows up to the savepoint and the branch's after it: every impression
    # due once, none twice, each labelled right.
    imps = topic_rows(ws, "impressions")
    clicked = {c["imp_id"] for c in topic_rows(ws, "clicks")}
    wm = st["label_join"].watermark_ms
    due = {i["imp_id"] for i in imps if parse_ts(i["ts"]) <= wm}

    def branch_rows() -> Any:  # (the sink writes a row a moment after its watermark moved)
        rows = ex.preview(ws, "label_join", experiment="b", limit=10**7)
        return [rows] if not due - set(before.imp_id) - set(rows.imp_id) else None

    after = wait_until(branch_rows, 60, "the branch's rows up to its watermark")[0]
    assert len(after) > 1000
    got = list(before.imp_id) + list(after.imp_id)
    assert len(got) == len(set(got)), "rows written twice at the branch point"
    assert not due - set(got), f"{len(due - set(got))} impressions lost at the branch point"
    both = pd.concat([before, after])
    assert (both.imp_id.isin(clicked) == both.label.astype(bool)).all()
    # The branch never wrote into the parent's folder.
    assert folder_listing(ws, "a", "label_join") == parent_files
    # Downstream, afresh on the branch's output: each minute once.
    wait_until(lambda: len(ex.preview(ws, "ctr_minute", experiment="b", limit=1000)) > 0, 120,
               "the branch's CTR per minute")
    minutes = ex.preview(ws, "ctr_minute", experiment="b", limit=1000)
    assert not minutes.window_start.duplicated().any()

    # The parent resumes from its own savepoint, exactly.
    ex.resume(ws, "a")
    st = wait_for(watermark_at_least(ws, "a", "label_join", "2025-01-01 00:12:00"), 300)
    result = check_label_join(ws, "a", st["label_join"].watermark_ms)
    assert result["missing"] == result["duplicates"] == result["wrong_labels"] == 0, result
    ex.stop(ws, "a")
    ex.stop(ws, "b")


def test_the_rides_chain_branched_at_its_first_node(scheduled_workspace: Any,
                                                    tmp_path: Path) -> None:
    """Three Flink nodes in a chain and a Python node: ``matched`` branched from its
    savepoint, ``rider_hourly`` and ``samples`` afresh on its new output."""
    ws = scheduled_workspace
    out = tmp_path / "ledger"
    out.mkdir()
    rides = Rides(ws.settings.home)
    define_rides(ws, out)
    for h in range(2):
        rides.hour(h)
    ex.launch(ws, "rides", name="r")
    wait_for(watermark_at_least(ws, "r", "matched", str(T0 + pd.Timedelta(minutes=50))), 240)
    ex.stop(ws, "r", savepoint=True)
    before = output(ws, "r", "matched")
    sps = savepoints_of(ws, "r")
    with pytest.raises(ConfigError, match=r"node 'samples' reads 'matched'"):
        clone(ws, "r", "r2", from_savepoints=[sps["samples"].id])
    clone(ws, "r", "r2", from_savepoints=[sps["matched"].id])
    for h in range(2, 4):
        rides.hour(h)
    cut = T0 + pd.Timedelta(hours=3)
    wait_for(watermark_at_least(ws, "r2", "matched", str(cut)), 300)
    want = truth(ws.settings.home)["matched"]

    def branch_report() -> Any:  # (rows reach the files a moment after the watermark)
        both = pd.concat([before, output(ws, "r2", "matched")])
        report = compare(both[both.ts < cut], want[want.ts < cut], ["req_id"],
                         ["accepted", "rider_id"])
        return report if not report["missing"] else None

    report = wait_until(branch_report, 60, "the branch's matched rows before 03:00")
    assert report == {"missing": 0, "duplicates": 0, "extra": 0, "wrong": 0}, report
    # The chain downstream starts on the branch's output: hourly counts of its rows only.
    wait_until(lambda: len(output(ws, "r2", "rider_hourly")) > 0, 180, "the branch's hourly")
    hourly = output(ws, "r2", "rider_hourly")
    assert not hourly.duplicated(["rider_id", "ts"]).any()
    samples = output(ws, "r2", "samples")
    assert set(output(ws, "r2", "matched").req_id) >= set(samples.req_id)
    ex.stop(ws, "r2")
