"""The label-join / CTR flow the Flink experiment tests run, and exactness checks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.flow.ctr_flow import LABEL_JOIN
from ultron_nb import experiments as ex
from ultron_nb.flow.build import define_node
from ultron_nb.services.datagen import clicklog_nodes, parse_ts

CTR = """
SELECT window_start, window_end, COUNT(*) AS impressions, SUM(label) AS clicks,
       CAST(SUM(label) AS DOUBLE) / COUNT(*) AS ctr
FROM TABLE(TUMBLE(TABLE label_join, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end
"""


def define_ctr_flow(ws: Any, flow: str = "ctr", *, partitions: int = 4, label_window: str = "10",
                    **options: str) -> Any:
    """impressions + clicks topics → label_join (LEFT interval join) → ctr_minute."""
    opts = {"checkpoint_interval": "1 s", **options}
    for node in clicklog_nodes(partitions=partitions):
        ws.define(flow, node)
    ws.define(flow, define_node("label_join", LABEL_JOIN, params={"label_window": label_window},
                                options=opts))
    ws.define(flow, define_node("ctr_minute", CTR, options=opts))
    return ws.flow(flow)


def topic_rows(ws: Any, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for seg in sorted((ws.settings.home / "topics" / name).glob("p*/seg-*.jsonl")):
        rows += [json.loads(x) for x in seg.read_text().splitlines() if x.strip()]
    return rows


def check_label_join(ws: Any, experiment: str, up_to_ms: int | None = None) -> dict[str, int]:
    """Compare label_join's output with the truth computed from the topics.

    Every impression at or before ``up_to_ms`` (all, when None) must be there exactly once,
    labelled 1 exactly when it was clicked (clicks are at most 5 min after their impression,
    inside the 10 min window).
    """
    imps = topic_rows(ws, "impressions")
    clicked = {c["imp_id"] for c in topic_rows(ws, "clicks")}
    out = ex.preview(ws, "label_join", experiment=experiment, limit=10**7)
    got = list(out.imp_id)
    due = {i["imp_id"] for i in imps if up_to_ms is None or parse_ts(i["ts"]) <= up_to_ms}
    wrong = sum(1 for r in out.itertuples() if (r.imp_id in clicked) != bool(r.label))
    return {"rows": len(got), "duplicates": len(got) - len(set(got)),
            "missing": len(due - set(got)), "wrong_labels": wrong, "due": len(due)}


def wait_for(predicate: Any, timeout: float = 120.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout:.0f} s (last: {last!r})")


def watermark_at_least(ws: Any, experiment: str, node: str, ts: str) -> Any:
    def check() -> Any:
        st = ex.status(ws, experiment)
        wm = st[node].watermark_ms
        return st if wm is not None and wm >= parse_ts(ts) else None
    return check


def job_dirs(ws: Any) -> list[Path]:
    return sorted((ws.settings.home / "topics").glob("*_*"))
