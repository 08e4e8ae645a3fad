from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

from ultron_nb.flow import to_dot

from .ctr_flow import ctr_flow


def test_dot_distinguishes_kinds_and_labels_edges() -> None:
    dot = to_dot(ctr_flow())
    assert '"impressions" [label="impressions\\n[topic]", shape=cylinder' in dot
    assert ('"label_join" [label="label_join\\n[flink stream]", shape=box, '
            'style="filled,rounded,bold"') in dot
    assert '"train" [label="train\\n[python]", shape=ellipse' in dot
    assert '"impressions" -> "label_join" [label="data"]' in dot
    assert 'label="stream→batch after watermark/1h"' in dot
    assert 'label="on model/ctr [version>0]"' in dot


def test_status_watermark_and_shared_decorations() -> None:
    dot = to_dot(ctr_flow(), status={"label_join": "RUNNING", "train": "FAILED"},
                 watermarks={"label_join": "10:05:00"}, shared={"impressions"})
    assert "label_join\\n[flink stream]\\nrunning\\nwm 10:05:00" in dot
    assert 'fillcolor="#b2f2bb"' in dot and 'fillcolor="#ff8787"' in dot
    assert "impressions\\n[topic]\\nshared" in dot


def test_names_with_quotes_are_escaped() -> None:
    dot = to_dot(ctr_flow(), watermarks={"label_join": 'a"b'})
    assert 'wm a\\"b' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is installed by make")
def test_svg_renders_every_node() -> None:
    flow = ctr_flow()
    svg = flow._repr_mimebundle_()["image/svg+xml"]
    root = ET.fromstring(svg)
    titles = {el.text for el in root.iter("{http://www.w3.org/2000/svg}title")}
    assert set(flow.names) <= titles


def test_nodes_with_failing_rules_are_marked() -> None:
    dot = to_dot(ctr_flow(), status={"label_join": "RUNNING"},
                 quality={"label_join": ["nulls_user_id", "unique_imp_id"]})
    line = next(x for x in dot.splitlines() if x.strip().startswith('"label_join" ['))
    assert "✗ nulls_user_id, unique_imp_id" in line and 'color="#e03131"' in line
    other = next(x for x in dot.splitlines() if x.strip().startswith('"impressions" ['))
    assert "✗" not in other and "#e03131" not in other
