"""The panel's API on a real local Flink cluster: one experiment's detail asks Flink (states,
web UI links, watermarks), and restarting a node from the API replaces its Flink job."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.services.flink_flows import define_ctr_flow
from ultron_nb import experiments as ex
from ultron_nb.engines.flink.rest import FlinkRest
from ultron_nb.services.datagen import gen_clicklog

from .conftest import get_json

pytestmark = [pytest.mark.flink, pytest.mark.slow]


@pytest.fixture
def panel_home(tmp_path: Path) -> Path:
    return tmp_path / ".ultron"  # the home of flink_workspace


@pytest.fixture
def panel_settings() -> dict[str, Any]:
    return {"flink_timeout": 20.0}


async def test_detail_and_restart_on_a_real_cluster(jp_fetch: Any, flink_workspace: Any,
                                                   flink_cluster: Any) -> None:
    ws = flink_workspace
    gen_clicklog(ws.settings, rate=10, duration=300, partitions=2, seed=5)
    define_ctr_flow(ws, "ctr", partitions=2)
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: ex.launch(ws, "ctr", name="r"))

    code, st = await get_json(jp_fetch, "ultron", "api", "experiments", "r")
    assert code == 200 and st["state"] == "running"
    with FlinkRest(ws.settings.target_url) as rest:
        on_flink = rest.job_ids()
    jobs = {j["node"]: j["job_id"] for j in st["jobs"]}
    assert set(jobs) == {"label_join", "ctr_minute"}
    assert {on_flink[j] for j in jobs.values()} == {"running"}
    port = flink_cluster.rest_port
    for j in st["jobs"]:
        assert j["web_url"] == f"http://127.0.0.1:{port}/#/job/running/{j['job_id']}/overview"
    assert st["flink_web"] == f"http://127.0.0.1:{port}/#/overview"

    # The stream nodes' watermarks come through once Flink's metric store has them.
    deadline = time.monotonic() + 90
    while True:
        code, st = await get_json(jp_fetch, "ultron", "api", "experiments", "r")
        wm = {n["node"]: n["watermark_ms"] for n in st["nodes"]}
        if wm["label_join"] is not None:
            break
        assert time.monotonic() < deadline, st
        await asyncio.sleep(1)
    label_join = next(n for n in st["nodes"] if n["node"] == "label_join")
    assert label_join["watermark"].startswith("2")  # a text like 2024-12-31 23:54:54

    code, after = await get_json(jp_fetch, "ultron", "api", "experiments", "r", "nodes",
                                 "ctr_minute", "restart", method="POST", body="{}",
                                 request_timeout=180)
    assert code == 200, after
    new = next(j["job_id"] for j in after["jobs"] if j["node"] == "ctr_minute")
    assert new != jobs["ctr_minute"]
    with FlinkRest(ws.settings.target_url) as rest:
        on_flink = rest.job_ids()
    assert on_flink[jobs["ctr_minute"]] == "canceled"
    assert on_flink[new] == "running" and on_flink[jobs["label_join"]] == "running"
