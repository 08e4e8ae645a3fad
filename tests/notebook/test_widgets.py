"""The live views where no widget can live, and in a real kernel run by nbclient: plain
IPython shows one static snapshot and starts no thread; a kernel gets the widget *and* its
static rendering in one output, which nbclient brings up to date when the watch ends and
nbconvert turns into HTML with the node table and the DAG; ``ExperimentStatus.watch()``
shows itself the same way. The experiment's cluster is dead here (no Flink needed): the
watch says so in its one error line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.conftest import run_cell
from tests.server.seed import define_wide_flow
from ultron_nb.config import Settings
from ultron_nb.engines.flink.cluster import free_port
from ultron_nb.notebook.widgets import WIDGET_MIME, WatchView
from ultron_nb.store import experiments as repo
from ultron_nb.workspace import Workspace


def seed(home: Path, name: str, state: str) -> Workspace:
    """Experiment ``name`` of flow ``wide`` (node ``n_0``) on a cluster nobody runs."""
    ws = Workspace(Settings(home=home))
    define_wide_flow(ws, flink_nodes=1)
    dead = f"http://127.0.0.1:{free_port()}"
    with ws.db.write() as conn:
        exp = repo.create_experiment(conn, name=name, flow_name="wide", flow_version=3,
                                     params={}, label=name, target=dead, state=state)
        repo.save_instance(conn, repo.InstanceRow(
            id=f"n_0_{name}", identity=name, target=dead, node_name="n_0", flow_name="wide",
            flow_version=3, params={}, upstream={}, output={}, state=state))
        repo.link_node(conn, exp.id, "n_0", f"n_0_{name}")
        repo.add_job(conn, instance_id=f"n_0_{name}", engine="flink",
                     external_id="ab" * 16, target=dead, state=state)
    return ws


def _watch_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("ultron-watch")]


def test_plain_ipython_shows_one_static_snapshot(ip: Any, workdir: Path) -> None:
    seed(workdir / ".ultron", "gone", "running")
    run_cell(ip, f"%config UltronMagic.home = {str(workdir / '.ultron')!r}")
    view = run_cell(ip, "%ultron watch gone --interval 0.1")
    assert isinstance(view, WatchView) and not view.running and not _watch_threads()
    bundle = view._repr_mimebundle_()
    assert WIDGET_MIME not in bundle
    assert 'data-node="n_0"' in bundle["text/html"]
    assert "cannot reach Flink at" in bundle["text/plain"]
    assert "cannot reach Flink at" in bundle["text/html"]


def _execute(nb: Any, workdir: Path) -> Any:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


WAIT = """import time
deadline = time.monotonic() + 60
while w.running and time.monotonic() < deadline:
    time.sleep(0.1)
print("ended" if not w.running else "still running")"""


def test_a_kernel_gets_the_widget_and_nbconvert_the_static_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbconvert import HTMLExporter

    home = tmp_path / ".ultron"
    seed(home, "gone", "running")
    monkeypatch.setenv("ULTRON_HOME", str(home))  # the kernel's home
    cells = ["%load_ext ultron_nb",
             "%ultron watch gone --interval 0.2 --duration 2",
             "w = _\n" + WAIT,
             "from ultron_nb import experiments\n"
             "from ultron_nb.workspace import Workspace\n"
             "experiments.status(Workspace(), 'gone').watch(interval=0.2, duration=1)",
             "w = _\n" + WAIT]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    _execute(nb, tmp_path)
    for i in (1, 3):
        outs = nb.cells[i].outputs
        assert [o.output_type for o in outs] == ["display_data"], outs
        data = outs[0].data
        # Once the watch ended, the output is its static rendering, brought up to date.
        assert WIDGET_MIME not in data
        assert 'data-node="n_0"' in data["text/html"]
        assert "cannot reach Flink at" in data["text/plain"]
        assert "watch ended" in data["text/html"], data["text/html"][:400]
        assert nb.cells[i + 1].outputs[0].text.strip() == "ended"
    # The widget was there, updated from its thread (the state nbclient kept of its models).
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    refreshes = [int(m["state"]["value"].split('data-refresh="')[1].split('"')[0])
                 for m in state.values()
                 if m["model_name"] == "HTMLModel" and "data-refresh" in m["state"]["value"]]
    assert len(refreshes) == 2 and min(refreshes) >= 2, refreshes
    html = HTMLExporter().from_notebook_node(nb)[0]
    assert html.count('data-node="n_0"') >= 2 and "watch ended" in html
