"""Every notebook in notebooks/ runs top to bottom in a real kernel."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "nb"
    work.mkdir()
    for helper in (ROOT / "notebooks").glob("*.py"):
        shutil.copy(helper, work)
    monkeypatch.setenv("ULTRON_HOME", str(work / ".ultron"))
    monkeypatch.delenv("ULTRON_DB_URL", raising=False)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}})
    try:
        client.execute()
    finally:  # a failed run must not leave the notebook's cluster or scheduler behind
        from ultron_nb.config import Settings
        from ultron_nb.engines.flink.cluster import LocalCluster
        from ultron_nb.scheduler import stop_daemon

        home = work / ".ultron"
        stop_daemon(Settings(home=home))
        LocalCluster(Settings(home=home)).down()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    if path.stem.startswith("01"):
        assert (work / ".ultron" / "ctr.svg").read_text().lstrip().startswith("<?xml")


def test_a_failing_ultron_cell_fails_the_run(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("ULTRON_HOME", str(tmp_path / ".ultron"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext ultron_nb\n%ultron flow f"),
                nbformat.v4.new_code_cell("%%ultron node x\nSELECT * FROM nowhere"),
                nbformat.v4.new_code_cell("reached = True")]
    with pytest.raises(CellExecutionError, match="UnknownNodeError: node 'x'"):
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert "outputs" not in nb.cells[2] or not nb.cells[2].outputs
