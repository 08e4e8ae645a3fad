"""The real-time CTR link of the seed articles, as a flow built through the Python API."""

from __future__ import annotations

from ultron_nb.flow import Flow
from ultron_nb.flow.build import define_node

IMPRESSIONS = "imp_id STRING, user_id STRING, item_id STRING, ts TIMESTAMP(3)"
CLICKS = "imp_id STRING, ts TIMESTAMP(3)"
LABEL_JOIN = """
SELECT i.imp_id, i.user_id, i.item_id, i.ts,
       CASE WHEN c.imp_id IS NULL THEN 0 ELSE 1 END AS label
FROM impressions i
LEFT JOIN clicks c
  ON i.imp_id = c.imp_id AND c.ts BETWEEN i.ts AND i.ts + INTERVAL '${label_window}' MINUTE
"""
FEATURES = """
SELECT item_id, window_end AS ts, COUNT(*) AS imps, SUM(label) AS clicks
FROM TABLE(TUMBLE(TABLE label_join, DESCRIPTOR(ts), INTERVAL '${feature_window}' MINUTE))
GROUP BY item_id, window_start, window_end
"""
SAMPLES = """
SELECT s.imp_id, s.user_id, s.item_id, s.ts, s.label, f.imps, f.clicks
FROM label_join s LEFT JOIN item_features f ON s.item_id = f.item_id
"""
TRAIN = '''
def train(ctx):
    """Fit a model on the hour's samples."""
    return ctx.params["lr"]
'''
EVALUATE = '''
def evaluate(ctx):
    return {"auc": 0.71}
'''


def ctr_flow(**param_overrides: str) -> Flow:
    nodes = [
        define_node("impressions", IMPRESSIONS, kind="topic", time="ts", watermark="5 s",
                    partitions=4),
        define_node("clicks", CLICKS, kind="topic", time="ts", watermark="5 s", partitions=4),
        define_node("label_join", LABEL_JOIN, params={"label_window": "10"}),
        define_node("item_features", FEATURES, params={"feature_window": "5"}),
        define_node("samples", SAMPLES),
        define_node("train", TRAIN, kind="python", inputs=["samples"], params={"lr": "0.05"},
                    after=["samples"], boundary="1h"),
        define_node("evaluate", EVALUATE, kind="python", inputs=["train"],
                    on_event="model/ctr", when="version>0"),
    ]
    return Flow("ctr", nodes).validate()
