"""The %ultron magics in a real IPython shell."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from IPython.core.error import UsageError

from ultron_nb import Workspace

CTR_CELLS = [
    "%ultron flow ctr",
    "%%ultron node impressions --kind topic --time ts --watermark '5 s' --partitions 4\n"
    "imp_id STRING,\nuser_id STRING,\nitem_id STRING,\nts TIMESTAMP(3)",
    "%%ultron node clicks --kind topic --time ts --watermark '5 s'\nimp_id STRING, ts TIMESTAMP(3)",
    "%%ultron node label_join --param window=10\n"
    "SELECT i.*, CASE WHEN c.imp_id IS NULL THEN 0 ELSE 1 END AS label\n"
    "FROM impressions i LEFT JOIN clicks c ON i.imp_id = c.imp_id\n"
    "AND c.ts BETWEEN i.ts AND i.ts + INTERVAL '${window}' MINUTE",
    "%%ultron node hourly_ctr --kind duckdb --after label_join --boundary 1h\n"
    "SELECT item_id, AVG(label) AS ctr FROM label_join GROUP BY item_id",
    "%%ultron node train --kind python --inputs hourly_ctr --on-event model/ctr --when changed\n"
    "def train(ctx):\n    return ctx",
]


def define_ctr(cell: Any) -> None:
    for source in CTR_CELLS:
        cell(source)


def test_define_list_and_show(cell: Any, workdir: Any) -> None:
    define_ctr(cell)
    table = cell("%ultron nodes")
    assert [r[0] for r in table.rows] == ["impressions", "clicks", "label_join", "hourly_ctr",
                                          "train"]
    assert table.rows[2][2] == "impressions, clicks"
    dot = cell("%ultron show --format dot")
    assert '"label_join" -> "hourly_ctr" [style=dashed' in str(dot)
    svg = cell("%ultron show")
    ET.fromstring(svg.svg)  # well-formed SVG
    assert "hourly_ctr" in svg.svg
    cell(f"%ultron show --format dot --out {workdir / 'ctr.dot'}")
    assert (workdir / "ctr.dot").read_text().startswith('digraph "ctr"')


def test_redefining_a_cell_redefines_the_node(cell: Any) -> None:
    define_ctr(cell)
    message = cell("%%ultron node hourly_ctr --kind duckdb --after label_join --boundary 2h\n"
                   "SELECT item_id, AVG(label) AS ctr FROM label_join GROUP BY item_id")
    assert str(message).startswith("redefined duckdb node hourly_ctr")
    flow = Workspace().flow("ctr")
    assert flow["hourly_ctr"].triggers[0].schedule == "2h"
    assert [h["change"] for h in Workspace().history("ctr")][-1] == "redefine hourly_ctr"


def test_state_survives_a_new_shell(cell: Any, ip: Any) -> None:
    define_ctr(cell)
    from ultron_nb.notebook.magics import UltronMagic

    ip.register_magics(UltronMagic(shell=ip))  # as after a kernel restart
    assert "version 5, 5 nodes" in str(cell("%ultron flow ctr"))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("%%ultron node x\nSELECT * FROM impresions",
         "UnknownNodeError: node 'x': its SQL reads 'impresions', which is not a node of flow "
         "'ctr' (did you mean 'impressions'?)"),
        ("%%ultron node x --bogus 1\nSELECT 1", "%ultron node: unrecognized arguments: --bogus"),
        ("%%ultron node x --mode fast\nSELECT 1", "argument --mode: invalid choice: 'fast'"),
        ("%ultron node x", "%ultron node needs a cell body"),
        ("%ultron rm label_join", "FlowError: cannot remove node 'label_join': 'hourly_ctr' "
                                  "depend on it"),
        ("%ultron rm nope", "UnknownNodeError: flow 'ctr' has no node 'nope'"),
        ("%ultron shwo", "unknown verb 'shwo' (did you mean 'show'?)"),
        ("%%ultron node t --kind python\nx = 1", "FlowError: node 't': a python node needs a "
                                                  "callable"),
        ("%%ultron node y --every 'every day'\nSELECT 1", "invalid schedule 'every day'"),
        ("%ultron show nope", "NotFoundError: no flow named 'nope' (flows: ctr)"),
    ],
)
def test_errors_are_one_line_and_leave_the_store_unchanged(
    cell: Any, source: str, message: str
) -> None:
    define_ctr(cell)
    before = Workspace().history("ctr")
    with pytest.raises(UsageError) as info:
        cell(source)
    assert message in str(info.value)
    assert "\n" not in str(info.value).strip()
    assert Workspace().history("ctr") == before


def test_after_a_kernel_restart_the_notebooks_flow_is_used_and_said(
        cell: Any, ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    from ultron_nb.notebook.magics import UltronMagic

    monkeypatch.setenv("JPY_SESSION_NAME", "/work/nb/ctr.ipynb")
    define_ctr(cell)
    cell("%ultron flow other")
    cell("%%ultron node o --kind dataset\nx INT")
    cell("%ultron flow ctr")  # this notebook works on ctr
    ip.register_magics(UltronMagic(shell=ip))  # as after a kernel restart
    shown: list[Any] = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **_k: shown.extend(objs))
    text = str(cell("%ultron nodes"))
    assert "flow ctr version" in text
    assert any("using flow ctr (selected before)" in str(o) for o in shown)
    monkeypatch.setenv("JPY_SESSION_NAME", "/work/nb/new.ipynb")  # another notebook
    ip.register_magics(UltronMagic(shell=ip))
    with pytest.raises(UsageError, match="no current flow"):  # two flows: it cannot guess
        cell("%ultron nodes")


def test_the_only_flow_is_used_without_asking(cell: Any, ip: Any) -> None:
    from ultron_nb.notebook.magics import UltronMagic

    define_ctr(cell)
    ip.register_magics(UltronMagic(shell=ip))
    assert "flow ctr version" in str(cell("%ultron nodes"))


def test_no_flow_selected(cell: Any) -> None:
    with pytest.raises(UsageError, match="no current flow: select one with %ultron flow NAME"):
        cell("%%ultron node a --kind dataset\nx INT")


def test_show_traceback_setting(cell: Any, ip: Any) -> None:
    from ultron_nb.errors import UnknownNodeError

    define_ctr(cell)
    cell("%config UltronMagic.show_traceback = True")
    try:
        with pytest.raises(UnknownNodeError):
            cell("%%ultron node x\nSELECT * FROM nowhere")
    finally:
        cell("%config UltronMagic.show_traceback = False")


def test_config_points_the_magic_at_another_store(cell: Any, workdir: Any) -> None:
    cell(f"%config UltronMagic.home = '{workdir / 'other'}'")
    try:
        cell("%ultron flow g")
        cell("%%ultron node a --kind dataset\nx INT")
        assert (workdir / "other" / "ultron.db").is_file()
    finally:
        cell("%config UltronMagic.home = ''")


def test_help_lists_every_verb(cell: Any) -> None:
    from ultron_nb.notebook.magics import VERBS

    text = str(cell("%ultron help"))
    assert all(f"  {name}" in text for name in VERBS)
    assert "--boundary" in str(cell("%ultron help node"))


def test_flows_and_history(cell: Any) -> None:
    define_ctr(cell)
    flows = cell("%ultron flows")
    assert flows.rows[0][:3] == ["ctr", 5, 5]
    history = cell("%ultron history")
    assert [r[1] for r in history.rows] == [
        "define impressions", "define clicks", "define label_join", "define hourly_ctr",
        "define train"]
    assert history.df.shape == (5, 4)


def test_third_party_info_lines_stay_out_of_cells(ip: Any, caplog: pytest.LogCaptureFixture
                                                  ) -> None:
    """httpx logs every request at INFO; a root logger at INFO (PyFlink sets one up after an
    interrupted query) must not bring those lines into the user's cells."""
    import logging

    import ultron_nb

    ultron_nb.load_ipython_extension(ip)
    with caplog.at_level(logging.INFO):
        logging.getLogger("httpx").info("HTTP Request: GET http://127.0.0.1/ 200 OK")
        logging.getLogger("py4j.clientserver").info("Received command c on object id p0")
        logging.getLogger("ultron_nb.test").warning("ours still shows")
    assert [r.name for r in caplog.records] == ["ultron_nb.test"]
