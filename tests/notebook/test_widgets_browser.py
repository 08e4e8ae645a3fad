"""The live widgets in a real JupyterLab seen by a real headless Chromium, with a real kernel
and a real local Flink cluster: ``%ultron watch`` updates from its background thread while
the kernel runs other cells, pauses its thread when its output is cleared and ends it when
the experiment stops; ``%ultron preview --follow`` fills a bounded live table, ends at its
``--limit``, and a kernel interrupt ends it and keeps the kernel.

Screenshots go to the test's temporary directory and, when ``ULTRON_SCREENSHOTS`` names a
directory, there too.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.conftest_flink import cancel_workspace_jobs
from tests.server.lab import JupyterProcess
from tests.services.flink_flows import define_ctr_flow, wait_for
from ultron_nb import experiments as ex
from ultron_nb.config import Settings
from ultron_nb.engines.outputs import count_rows, flink_files, read_output_file
from ultron_nb.services.datagen import gen_clicklog
from ultron_nb.workspace import Workspace

pytestmark = [pytest.mark.flink, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
UI_TIMEOUT_MS = 60_000
THREADS = ('import threading\n'
           'print(sorted(t.name for t in threading.enumerate() if t.name.startswith("ultron-")))')
CELLS = [
    "%load_ext ultron_nb",
    "%ultron watch w --interval 1",
    "print(6 * 7)",
    THREADS,
    "%ultron preview label_join --experiment w --follow --limit 5 --duration 300",
    "%ultron preview label_join --experiment w --follow --limit 100000 --duration 600",
]
WATCH = 'div.ultron-watch.widget-vbox [data-role="headline"]'
FOLLOW = 'div.ultron-follow.widget-vbox [data-role="headline"]'
RESULT = '[data-role="headline"][data-rows]'  # a follow's, live or static
STATIC = '.ultron-watch-static [data-role="headline"]'  # an ended watch's


@pytest.fixture
def jp_asyncio_loop() -> Iterator[None]:
    """No pytest-jupyter event loop here: Playwright's sync API runs its own."""
    yield None


@pytest.fixture
def jp_server_cleanup() -> Iterator[None]:
    """No in-process Jupyter server here: the server is a real ``jupyter lab`` process."""
    yield None


@pytest.fixture
def watched(tmp_path: Path, flink_cluster: Any) -> Iterator[Workspace]:
    """Experiment ``w`` running on the local cluster: topics → label_join → ctr_minute."""
    ws = Workspace(Settings(home=tmp_path / ".ultron", flink_port=flink_cluster.rest_port))
    gen_clicklog(ws.settings, rate=5, duration=180, partitions=2, seed=4)
    define_ctr_flow(ws, "ctr", partitions=2, label_window="1")  # rows out 1 min after in
    ex.launch(ws, "ctr", name="w")
    try:
        yield ws
    finally:
        cancel_workspace_jobs(ws)


@pytest.fixture
def lab(tmp_path: Path, watched: Workspace, flink_cluster: Any) -> Iterator[JupyterProcess]:
    proc = JupyterProcess(tmp_path / "lab", home=watched.home,
                          env={"ULTRON_HOME": str(watched.home),
                               "ULTRON_FLINK_PORT": str(flink_cluster.rest_port)},
                          args=["--LabApp.expose_app_in_browser=True"])
    proc.start()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, proc.base / "root" / "widgets.ipynb")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def page(lab: JupyterProcess) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(UI_TIMEOUT_MS)
            pg.goto(f"{lab.url}lab/tree/widgets.ipynb?token={lab.token}")
            pg.wait_for_function("""() => { const w = window.jupyterapp?.shell.currentWidget;
                return w?.sessionContext?.session?.kernel?.status === 'idle'; }""",
                                 timeout=120_000)
            yield pg
        finally:
            browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Any:
    def shot(pg: Any, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        pg.screenshot(path=str(path), full_page=True)
        extra = os.environ.get("ULTRON_SCREENSHOTS")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)
        return path

    return shot


# ---------------------------------------------------------------- the notebook, by its app
def start_cell(pg: Any, i: int) -> None:
    """Run cell ``i`` (as Shift+Enter would) without waiting for it."""
    pg.evaluate("""(i) => { const nb = window.jupyterapp.shell.currentWidget;
        window.__ran = window.__ran || {}; window.__ran[i] = false;
        nb.content.activeCellIndex = i; nb.content.deselectAll();
        window.jupyterapp.commands.execute('notebook:run-cell')
            .then(() => { window.__ran[i] = true; }); }""", i)


def wait_cell(pg: Any, i: int, timeout_ms: int = UI_TIMEOUT_MS) -> str:
    """Wait until cell ``i`` has run; its outputs' text."""
    pg.wait_for_function("(i) => window.__ran && window.__ran[i] === true", arg=i,
                         timeout=timeout_ms)
    return output_text(pg, i)


def run_cell(pg: Any, i: int, timeout_ms: int = UI_TIMEOUT_MS) -> str:
    start_cell(pg, i)
    return wait_cell(pg, i, timeout_ms)


def output_text(pg: Any, i: int) -> str:
    return pg.evaluate("""(i) => window.jupyterapp.shell.currentWidget.content.widgets[i]
        .outputArea.node.innerText""", i)


def clear_output(pg: Any, i: int) -> None:
    pg.evaluate("""(i) => { const nb = window.jupyterapp.shell.currentWidget;
        nb.content.activeCellIndex = i; nb.content.deselectAll();
        return window.jupyterapp.commands.execute('notebook:clear-cell-output'); }""", i)


def cell(pg: Any, i: int) -> Any:
    return pg.locator(".jp-Notebook .jp-Cell").nth(i)


def refreshes(pg: Any) -> int:
    return int(cell(pg, 1).locator(WATCH).get_attribute("data-refresh") or 0)


def ultron_threads(pg: Any) -> list[str]:
    return json.loads(run_cell(pg, 3).strip().replace("'", '"'))


def new_rows(ws: Workspace, experiment: str, node: str) -> set[int]:
    member = ex.find_member(ws, node, experiment, None)
    assert member is not None
    return {json.loads(x)["imp_id"] for p in flink_files(Path(member[1].output["path"]))
            for x in read_output_file(p).decode().splitlines() if x.strip()}


def test_widgets_update_live_in_the_browser(page: Any, watched: Workspace, shots: Any) -> None:
    pg, ws = page, watched
    assert "Error" not in run_cell(pg, 0)

    # The watch: a widget (not the static HTML), refreshed from its thread while idle.
    run_cell(pg, 1)
    head = cell(pg, 1).locator(WATCH)
    head.wait_for()
    assert head.get_attribute("data-state") == "running"
    first = refreshes(pg)
    wait_for(lambda: refreshes(pg) >= first + 3, 60)
    # The kernel is not blocked: another cell runs while the widget keeps refreshing.
    assert run_cell(pg, 2).strip() == "42"
    after = refreshes(pg)
    wait_for(lambda: refreshes(pg) > after, 60)
    # label_join's sink rows (Flink's writer metric) and its watermark show up.
    table = cell(pg, 1).locator('tr[data-node="label_join"]')
    member = ex.find_member(ws, "label_join", "w", None)
    assert member is not None
    wait_for(lambda: (table.locator(".ultron-rows").inner_text().strip() or "0") != "0", 240)
    wait_for(lambda: table.locator(".ultron-wm").inner_text().strip(), 120)
    assert (count_rows(member[1].output) or 0) > 0
    assert table.get_attribute("data-state") == "running"
    assert cell(pg, 1).locator("svg").count() >= 1  # the DAG
    shots(pg, "widget_01_watch")

    # Cleared output: no view left, so the refresh thread ends (it costs nothing).
    assert "ultron-watch-w" in ultron_threads(pg)
    clear_output(pg, 1)
    wait_for(lambda: "ultron-watch-w" not in ultron_threads(pg), 60, interval=1)

    # Shown again: live again.
    run_cell(pg, 1)
    head.wait_for()
    first = refreshes(pg)
    wait_for(lambda: refreshes(pg) > first, 60)

    # preview --follow: only rows written from now on, up to --limit, in a live table.
    before = new_rows(ws, "w", "label_join")
    start_cell(pg, 4)
    follow = cell(pg, 4).locator(FOLLOW)
    follow.wait_for()
    assert follow.get_attribute("data-rows") == "0"
    gen_clicklog(ws.settings, rate=5, duration=180, partitions=2, seed=4)  # 3 more minutes
    wait_cell(pg, 4, 300_000)
    result = cell(pg, 4).locator(RESULT)  # the static result once it has ended
    assert cell(pg, 4).locator(FOLLOW).count() == 0
    assert result.get_attribute("data-reason") == "limit"
    assert result.get_attribute("data-rows") == "5"
    shown = cell(pg, 4).locator("table.ultron-follow tbody tr")
    assert shown.count() == 5
    cols = cell(pg, 4).locator("table.ultron-follow thead th").all_inner_texts()
    ids = {int(r.locator("td").nth(cols.index("imp_id")).inner_text())
           for r in shown.all()}
    assert len(ids) == 5 and not ids & before and ids <= new_rows(ws, "w", "label_join")
    shots(pg, "widget_02_follow")

    # A kernel interrupt ends a follow; the kernel stays (its next cell runs).
    start_cell(pg, 5)
    cell(pg, 5).locator(FOLLOW).wait_for()
    pg.evaluate("""() => window.jupyterapp.shell.currentWidget
        .sessionContext.session.kernel.interrupt()""")
    wait_cell(pg, 5, 120_000)
    assert cell(pg, 5).locator(RESULT).get_attribute("data-reason") == "interrupted"
    assert run_cell(pg, 2).strip() == "42"
    wait_for(lambda: ultron_threads(pg) == ["ultron-watch-w"], 60, interval=1)  # reader gone

    # The experiment stops: the watch says so and its thread ends by itself.
    ex.stop(ws, "w")
    cell(pg, 1).locator(f'{STATIC}[data-state="canceled"]').wait_for(timeout=120_000)
    assert cell(pg, 1).locator(WATCH).count() == 0  # the widget gave way to the static view
    assert cell(pg, 1).locator('tr[data-node="label_join"][data-state="canceled"]').count()
    wait_for(lambda: "ultron-watch-w" not in ultron_threads(pg), 60, interval=1)
    shots(pg, "widget_03_stopped")
