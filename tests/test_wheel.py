"""The wheel, built from a clean copy of the checkout, carries the prebuilt side panel and
the config that enables the server extension; installed into a fresh virtualenv with no node
on PATH, Jupyter lists both as enabled and a real JupyterLab serves them.

The fresh venv gets the wheel with ``--no-deps``; the rest of the stack (JupyterLab, Flink,
...) is made importable from the shared environment by a ``.pth`` file, because installing
850 MB of dependencies again proves nothing about the wheel. What is under test is the
wheel's content and what its installation enables, in a prefix of its own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from ultron_nb.engines.flink.cluster import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def clean_copy(dest: Path) -> Path:
    """The files git tracks, as they are in the working tree (no build output, no
    node_modules)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def run_entry(python: Path, module: str, argv: list[str], env: dict[str, str]) -> str:
    """Run a console script's entry point (``module:main``) with ``python``."""
    code = f"import sys; sys.argv = {argv!r}; from {module} import main; main()"
    done = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, cwd=env["HOME"])
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_wheel_ships_the_panel_and_enables_both_extensions(tmp_path: Path) -> None:
    src = clean_copy(tmp_path / "src")
    assert not (src / "ultron_nb" / "labextension").exists()  # built by the wheel build
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(dist), str(src)], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-4000:]
    (wheel,) = dist.glob("ultron_nb-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = "ultron_nb-0.1.0.data/data/"
    ext = f"{data}share/jupyter/labextensions/ultron_nb/"
    assert f"{ext}package.json" in names
    assert f"{ext}static/style.js" in names
    assert any(n.startswith(f"{ext}static/remoteEntry.") for n in names)
    assert f"{data}etc/jupyter/jupyter_server_config.d/ultron_nb.json" in names
    assert "ultron_nb/server/handlers.py" in names
    assert not any(n.startswith("ultron_nb/labextension/") for n in names)  # not twice

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "_shared_stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=300)
    # Run away from the checkout (python -c imports from the working directory first).
    env = {"PATH": str(venv / "bin"), "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8"}
    Path(env["HOME"]).mkdir()
    assert shutil.which("node", path=env["PATH"]) is None
    where = subprocess.run([str(python), "-c", "import ultron_nb; print(ultron_nb.__file__)"],
                           env=env, capture_output=True, text=True, check=True,
                           cwd=env["HOME"]).stdout
    assert where.startswith(str(site))  # the wheel's copy, not the checkout's

    labext = run_entry(python, "jupyterlab.labextensions", ["jupyter-labextension", "list"],
                       env)
    assert str(venv / "share" / "jupyter" / "labextensions") in labext
    line = next(x for x in labext.splitlines() if "ultron_nb" in x and "v0.1.0" in x)
    assert "enabled" in line and "OK" in line, labext
    server = run_entry(python, "jupyter_server.extension.serverextension",
                       ["jupyter-server-extension", "list"], env)
    assert str(venv / "etc" / "jupyter") in server
    assert "ultron_nb.server enabled" in " ".join(server.replace("\x1b[32m", "")
                                                   .replace("\x1b[0m", "").split()), server
    assert "ultron_nb.server OK" in " ".join(server.replace("\x1b[32m", "")
                                              .replace("\x1b[0m", "").split())

    # A real JupyterLab from that venv serves the panel and the API.
    port, token = free_port(), "wheel-test-token"
    (tmp_path / "root").mkdir()
    lab = subprocess.Popen(
        [str(python), "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", "--allow-root",
         f"--ServerApp.root_dir={tmp_path / 'root'}",
         f"--UltronServer.home={tmp_path / 'ultron-home'}"],
        env={**env, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
             "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        cwd=tmp_path / "root")
    try:
        headers = {"Authorization": f"token {token}"}
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert lab.poll() is None, "jupyter lab exited"
            try:
                if httpx.get(f"{base}/api/status", headers=headers, timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "jupyter lab did not answer"
            time.sleep(0.3)
        exts = httpx.get(f"{base}/lab/api/extensions", headers=headers, timeout=10).json()
        ours = [e for e in exts if e["name"].replace("-", "_") == "ultron_nb"]
        assert ours and ours[0]["enabled"], exts
        flows = httpx.get(f"{base}/ultron/api/flows", headers=headers, timeout=10)
        assert (flows.status_code, flows.json()) == (200, [])
        assert httpx.get(f"{base}/ultron/api/flows", timeout=10).status_code == 403
    finally:
        lab.terminate()
        lab.wait(30)
