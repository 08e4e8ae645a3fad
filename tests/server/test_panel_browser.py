"""The side panel in a real headless Chromium, against a real JupyterLab with ultron's server
extension and a real local Flink cluster: the panel lists a running experiment, a clone from
the panel shares the unchanged job, stop with savepoint from the panel stops the jobs (states
asked from Flink's REST API), errors show as the server's one line, and the panel reconnects
after the Jupyter server restarts.

Screenshots go to the test's temporary directory and, when ``ULTRON_SCREENSHOTS`` names a
directory, there too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest_flink import cancel_workspace_jobs
from tests.services.flink_flows import define_ctr_flow
from ultron_nb import experiments as ex
from ultron_nb.config import Settings
from ultron_nb.engines.flink.rest import FlinkRest
from ultron_nb.flow.build import define_node
from ultron_nb.services.datagen import gen_clicklog
from ultron_nb.workspace import Workspace

from .lab import JupyterProcess

pytestmark = [pytest.mark.flink, pytest.mark.slow]

ITEM_CTR = """
SELECT item_id, window_end AS ts, COUNT(*) AS imps, SUM(label) AS clicks
FROM TABLE(TUMBLE(TABLE label_join, DESCRIPTOR(ts), INTERVAL '${feature_window}' MINUTE))
GROUP BY item_id, window_start, window_end
"""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
UI_TIMEOUT_MS = 60_000


@pytest.fixture
def jp_asyncio_loop() -> Iterator[None]:
    """No pytest-jupyter event loop here: Playwright's sync API runs its own (module-wide)."""
    yield None


@pytest.fixture
def jp_server_cleanup() -> Iterator[None]:
    """No in-process Jupyter server here: the server is a real ``jupyter lab`` process."""
    yield None


@pytest.fixture(scope="module")
def panel_ws(tmp_path_factory: pytest.TempPathFactory, flink_cluster: Any) -> Iterator[Any]:
    """A workspace on the local cluster with experiment ``a`` running: topics → label_join →
    item_ctr (a parameter ``feature_window``)."""
    home = tmp_path_factory.mktemp("panel") / ".ultron"
    ws = Workspace(Settings(home=home, flink_port=flink_cluster.rest_port))
    gen_clicklog(ws.settings, rate=10, duration=300, partitions=2, seed=3)
    define_ctr_flow(ws, "link", partitions=2)
    ws.remove("link", "ctr_minute")
    ws.define("link", define_node("item_ctr", ITEM_CTR, params={"feature_window": "5"},
                                  options={"checkpoint_interval": "1 s"}))
    ex.launch(ws, "link", name="a")
    try:
        yield ws
    finally:
        cancel_workspace_jobs(ws)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, panel_ws: Any,
        flink_cluster: Any) -> Iterator[JupyterProcess]:
    proc = JupyterProcess(tmp_path_factory.mktemp("lab"), home=panel_ws.home,
                          env={"ULTRON_FLINK_PORT": str(flink_cluster.rest_port)})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def page(lab: JupyterProcess) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1500, "height": 950})
            pg.set_default_timeout(UI_TIMEOUT_MS)
            pg.goto(f"{lab.url}lab?token={lab.token}")
            pg.wait_for_selector("#jp-main-dock-panel")
            # A restored layout may hide a panel activated by id: click its tab.
            pg.locator('.jp-SideBar [data-id="ultron-panel"]').click()
            pg.wait_for_selector('#ultron-panel [data-role="status"]:has-text("connected")')
            widen_sidebar(pg, 560)
            yield pg
        finally:
            browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("screenshots")
    extra = os.environ.get("ULTRON_SCREENSHOTS")

    def shot(pg: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        pg.screenshot(path=str(path))
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)
        return path

    return shot


def widen_sidebar(pg: Any, width: int) -> None:
    """Drag the split handle right of the left sidebar, as a user would."""
    box = pg.locator("#ultron-panel").bounding_box()
    x, y = box["x"] + box["width"] + 2, box["y"] + box["height"] / 2
    pg.mouse.move(x, y)
    pg.mouse.down()
    pg.mouse.move(box["x"] + width, y, steps=5)
    pg.mouse.up()


def flink_states(ws: Any) -> dict[str, str]:
    """Job id → state of every job on the cluster, from Flink's REST API."""
    with FlinkRest(ws.settings.target_url) as rest:
        return rest.job_ids()


def job_of(ws: Any, experiment: str, node: str) -> str:
    job = ex.status(ws, experiment)[node].job_id
    assert job
    return job


def dialog_button(pg: Any, label: str) -> Any:
    return pg.locator(".jp-Dialog .jp-Dialog-button", has_text=label)


def wait_notice(pg: Any, text: str, timeout_ms: int = 180_000) -> None:
    pg.wait_for_selector(f'#ultron-panel [data-role="notice"]:text-is("{text}")',
                         timeout=timeout_ms)


def select(pg: Any, experiment: str) -> None:
    row = pg.locator(f'#ultron-panel [data-experiment="{experiment}"].ultron-exp')
    if "ultron-selected" not in (row.get_attribute("class") or ""):
        row.click()
    pg.wait_for_selector(f'#ultron-panel h3[data-experiment="{experiment}"]')


def test_panel_lists_clones_and_stops_a_running_experiment(
        page: Any, panel_ws: Any, shots: Any, flink_cluster: Any) -> None:
    ws, pg = panel_ws, page
    a_join, a_ctr = job_of(ws, "a", "label_join"), job_of(ws, "a", "item_ctr")
    assert {flink_states(ws)[j] for j in (a_join, a_ctr)} == {"running"}

    # The running experiment is listed under its flow, then opened: nodes, jobs, DAG.
    pg.wait_for_selector('[data-flow="link"] [data-experiment="a"] [data-state="running"]')
    select(pg, "a")
    nodes = pg.locator('#ultron-panel [data-role="nodes"]')
    nodes.locator('tr[data-node="label_join"][data-state="running"]').wait_for()
    nodes.locator('tr[data-node="item_ctr"][data-state="running"]').wait_for()
    links = {pg.locator(f'[data-role="jobs"] [data-job="{j}"] a').get_attribute("href")
             for j in (a_join, a_ctr)}
    port = flink_cluster.rest_port
    assert links == {f"http://127.0.0.1:{port}/#/job/running/{j}/overview"
                     for j in (a_join, a_ctr)}
    # label_join's watermark shows once Flink's metric store has it (fetched every 10 s).
    pg.wait_for_function(
        """() => {const c = document.querySelector(
              '#ultron-panel tr[data-node="label_join"] .ultron-wm');
           return c && /^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d$/.test(c.textContent);}""",
        timeout=90_000)
    pg.wait_for_function("""() => {const i = document.querySelector(
        '#ultron-panel img[data-role="dag"]'); return i && i.complete && i.naturalWidth > 100;}""")
    shots(pg, "01_running_experiment")

    # A mistake answers the server's one line, shown in the panel; nothing is launched.
    pg.locator('#ultron-panel [data-action="clone"]').click()
    pg.locator('.jp-Dialog [data-field="name"]').fill("a")
    dialog_button(pg, "Show plan").click()
    error = pg.locator('#ultron-panel [data-role="error"]')
    error.wait_for(state="visible")
    assert error.inner_text() == ("ConfigError: an experiment named 'a' exists already; "
                                  "choose another name")

    # Clone with an override: the plan first (label_join shared, item_ctr new), then launch.
    pg.locator('#ultron-panel [data-action="clone"]').click()
    pg.locator('.jp-Dialog [data-field="name"]').fill("b")
    pg.locator('.jp-Dialog [data-field="set"]').fill("item_ctr.feature_window=2")
    dialog_button(pg, "Show plan").click()
    plan = pg.locator(".jp-Dialog .ultron-plan")
    plan.wait_for()
    steps = {r.get_attribute("data-node"): r.locator("[data-plan]").inner_text()
             for r in plan.locator("tr[data-node]").all()}
    assert steps == {"impressions": "shared", "clicks": "shared", "label_join": "shared",
                     "item_ctr": "new"}
    shots(pg, "02_clone_plan")
    assert "b" not in [e.name for e in ex.list_experiments(ws)]  # the plan launched nothing
    dialog_button(pg, "Launch clone").click()
    wait_notice(pg, "cloning a → b: done")
    pg.wait_for_selector('#ultron-panel h3[data-experiment="b"]')
    b_ctr = job_of(ws, "b", "item_ctr")
    assert job_of(ws, "b", "label_join") == a_join  # shared: the same Flink job
    running = {j for j, s in flink_states(ws).items() if s == "running"}
    assert running == {a_join, a_ctr, b_ctr}  # one new job, not two
    pg.wait_for_selector(f'#ultron-panel [data-role="jobs"] [data-job="{a_join}"]'
                         ':has-text("shared from a")')
    shots(pg, "03_clone_running")

    # Stop the clone with a savepoint: its own job stops, the shared one runs on for a.
    pg.locator('#ultron-panel [data-action="stop"]').click()
    assert pg.locator('.jp-Dialog [data-field="savepoint"]').is_checked()
    dialog_button(pg, "Stop").click()
    wait_notice(pg, "stopping b: done")
    states = flink_states(ws)
    assert states[b_ctr] == "finished"  # stop-with-savepoint ends as FINISHED
    assert states[a_join] == states[a_ctr] == "running"
    assert ex.status(ws, "b")["item_ctr"].savepoint
    pg.wait_for_selector('[data-experiment="b"].ultron-exp [data-state="stopped"]')
    shots(pg, "04_clone_stopped")

    # Stop a with a savepoint from the panel: both its jobs stop on Flink.
    select(pg, "a")
    pg.locator('#ultron-panel [data-action="stop"]').click()
    dialog_button(pg, "Stop").click()
    wait_notice(pg, "stopping a: done")
    states = flink_states(ws)
    assert states[a_join] == states[a_ctr] == "finished"
    pg.wait_for_selector('[data-experiment="a"].ultron-exp [data-state="stopped"]')
    pg.wait_for_selector('#ultron-panel [data-role="nodes"] tr[data-node="label_join"]'
                         '[data-state="stopped"]')
    shots(pg, "05_stopped")


def test_panel_reconnects_after_the_server_restarts(page: Any, lab: JupyterProcess,
                                                    panel_ws: Any, shots: Any) -> None:
    """The panel keeps polling while the server is down and works again once it is back:
    a resume from the panel (a POST, token and XSRF) starts b's job from its savepoint."""
    ws, pg = panel_ws, page
    status = '#ultron-panel [data-role="status"]'
    lab.stop()
    pg.wait_for_selector(f'{status}[data-connected="false"]')
    assert "not reachable" in pg.inner_text(status)
    lab.start()  # same port and token: the page's credentials still hold
    pg.wait_for_selector(f'{status}[data-connected="true"]', timeout=90_000)
    lost = dialog_button(pg, "Close")  # JupyterLab's own "Server Connection Error" dialog
    if lost.count():
        lost.click()

    stopped = job_of(ws, "b", "item_ctr")
    select(pg, "b")
    pg.locator('#ultron-panel [data-action="resume"]').click()
    dialog_button(pg, "Resume").click()
    wait_notice(pg, "resuming b: done")
    resumed = job_of(ws, "b", "item_ctr")
    assert resumed != stopped
    assert flink_states(ws)[resumed] == "running"
    assert ex.status(ws, "b")["item_ctr"].savepoint  # started from it
    pg.wait_for_selector('#ultron-panel [data-role="nodes"] tr[data-node="item_ctr"]'
                         '[data-state="running"]')
    shots(pg, "06_reconnected_and_resumed")


def test_panel_lists_model_versions_and_promotes_one(page: Any, panel_ws: Any,
                                                    shots: Any) -> None:
    """Versions registered in the workspace's MLflow store show in the panel with their
    lineage; Promote moves the alias in the registry and the panel shows it."""
    from ultron_nb.engines.mlflow.center import ModelCenter

    from .test_api import register_versions

    ws, pg = panel_ws, page
    register_versions(ws, 2)
    model = pg.locator('#ultron-panel [data-role="models"] [data-model="ctr_lr"]')
    model.locator('[data-version="2"]').wait_for(timeout=60_000)  # models reload every 10 polls
    assert "exp_000/train" in model.locator('[data-version="1"]').inner_text()
    model.locator('[data-version="1"] [data-action="promote"]').click()
    pg.locator('.jp-Dialog [data-field="alias"]').fill("champion")
    dialog_button(pg, "Promote").click()
    wait_notice(pg, "promoting ctr_lr v1 to @champion: done")
    pg.wait_for_selector('#ultron-panel [data-model="ctr_lr"] [data-version="1"] '
                         '[data-role="aliases"]:text-is("@champion")')
    assert ModelCenter(ws.settings, ws.db).alias_version("ctr_lr", "champion") == 1
    assert model.locator('[data-version="2"] [data-role="aliases"]').inner_text() == ""
    shots(pg, "07_models")


def test_panel_clones_a_branch_from_a_savepoint(page: Any, panel_ws: Any, shots: Any) -> None:
    """The clone dialog lists the savepoints of the source's family; the one ticked is in
    the plan and the clone's node starts from it on Flink. (b runs a's label_join again
    since its resume, so the clone shares it and branches item_ctr from a's savepoint.)"""
    from ultron_nb.store import savepoints as sp_repo

    ws, pg = panel_ws, page
    with ws.db.read() as conn:
        taken = [s for s in sp_repo.of_experiments(conn, ["a"]) if s.node_name == "item_ctr"]
    sp = taken[-1]  # a's item_ctr, from its stop with a savepoint
    select(pg, "a")
    pg.locator('#ultron-panel [data-action="clone"]').click()
    pg.locator('.jp-Dialog [data-field="name"]').fill("c")
    choice = pg.locator(f'.jp-Dialog [data-field="savepoint"][data-savepoint="{sp.id}"]')
    choice.check()
    dialog_button(pg, "Show plan").click()
    pg.wait_for_selector('.jp-Dialog .ultron-plan, #ultron-panel [data-role="error"]:visible')
    error = pg.locator('#ultron-panel [data-role="error"]')
    assert not error.is_visible(), error.inner_text()
    plan = pg.locator(".jp-Dialog .ultron-plan")
    steps = {r.get_attribute("data-node"): r.locator("[data-plan]").inner_text()
             for r in plan.locator("tr[data-node]").all()}
    assert steps["item_ctr"] == f"new, from savepoint {sp.id}"
    assert steps["label_join"] == "shared"
    shots(pg, "08_branch_plan")
    dialog_button(pg, "Launch clone").click()
    wait_notice(pg, "cloning a → c: done")
    st = ex.status(ws, "c")
    assert st["item_ctr"].savepoint == sp.location  # started with a's state
    assert job_of(ws, "c", "label_join") == job_of(ws, "b", "label_join")  # shared
    assert flink_states(ws)[job_of(ws, "c", "item_ctr")] == "running"
    with FlinkRest(ws.settings.target_url) as rest:
        restored = rest.restored_checkpoint(job_of(ws, "c", "item_ctr"))
    assert restored is not None and restored.savepoint


def test_panel_shows_an_experiments_data_quality(page: Any, panel_ws: Any, shots: Any,
                                                 tmp_path: Path) -> None:
    """An experiment whose rules failed: the panel's detail lists each rule FAILING with its
    window counts, names the node to look at first, and shows the violations."""
    from .seed import seed_quality

    ws, pg = panel_ws, page
    seed_quality(ws, tmp_path, "dq")
    pg.wait_for_selector('#ultron-panel [data-experiment="dq"].ultron-exp')
    select(pg, "dq")
    rules = pg.locator('#ultron-panel [data-role="quality"] [data-role="rules"]')
    rules.locator('tr[data-rule="unique_id"][data-state="FAILING"]').wait_for()
    rules.locator('tr[data-rule="range_v"][data-state="FAILING"]').wait_for()
    assert pg.inner_text('#ultron-panel [data-role="look-first"]').startswith(
        "look first at: agg")
    violations = pg.locator('#ultron-panel [data-role="violations"] [data-rule]')
    assert sorted(v.get_attribute("data-rule") for v in violations.all()) == \
        ["range_v", "unique_id"]
    shots(pg, "09_data_quality")
    select(pg, "a")  # an experiment without rules shows none
    pg.wait_for_selector('#ultron-panel h3[data-experiment="a"]')
    pg.wait_for_function("""() => !document.querySelector(
        '#ultron-panel [data-role="quality"] [data-role="rules"]')""")
