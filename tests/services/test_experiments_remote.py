"""A remote Flink cluster (by REST URL) goes through the same code path as the local one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ultron_nb import experiments as ex
from ultron_nb.config import Settings
from ultron_nb.engines.flink.rest import FlinkRest
from ultron_nb.services.datagen import gen_clicklog
from ultron_nb.workspace import Workspace

from .flink_flows import check_label_join, define_ctr_flow, wait_for

pytestmark = [pytest.mark.flink, pytest.mark.slow]


def test_an_experiment_runs_on_a_remote_cluster_by_url(
    tmp_path: Path, flink_cluster: Any, remote_flink_cluster: Any,
) -> None:
    from tests.conftest_flink import cancel_workspace_jobs

    # flink_url set: experiments go to the "remote" cluster; the local one is not used.
    ws = Workspace(Settings(home=tmp_path / ".ultron", flink_url=remote_flink_cluster.url,
                            flink_port=flink_cluster.rest_port))
    try:
        log = gen_clicklog(ws.settings, rate=10, duration=600, partitions=2, seed=9)
        define_ctr_flow(ws, partitions=2)
        with FlinkRest(flink_cluster.url) as local:
            local_jobs = set(local.job_ids())
            st = ex.launch(ws, "ctr", name="remote", bounded=True)
            assert st.target == remote_flink_cluster.url
            assert set(local.job_ids()) == local_jobs  # nothing went to the local cluster
        with FlinkRest(remote_flink_cluster.url) as remote:
            ids = remote.job_ids()
            assert st["label_join"].job_id in ids and st["ctr_minute"].job_id in ids
            assert st["label_join"].web_url.startswith(remote_flink_cluster.url)
        st = wait_for(lambda: (s := ex.status(ws, "remote")).state == "finished" and s)
        result = check_label_join(ws, "remote")
        assert result["rows"] == log.impression_count
        assert result["missing"] == result["wrong_labels"] == result["duplicates"] == 0
    finally:
        cancel_workspace_jobs(ws)


def test_per_experiment_target_overrides_the_setting(
    flink_workspace: Any, remote_flink_cluster: Any,
) -> None:
    ws = flink_workspace
    gen_clicklog(ws.settings, rate=5, duration=60, partitions=1, seed=10)
    define_ctr_flow(ws, partitions=1)
    st = ex.launch(ws, "ctr", name="there", target=remote_flink_cluster.url)
    assert st.target == remote_flink_cluster.url and st.state == "running"
    with FlinkRest(remote_flink_cluster.url) as remote:
        assert remote.job_state(st["label_join"].job_id) == "running"
    assert ex.stop(ws, "there").state == "canceled"
