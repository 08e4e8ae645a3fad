"""A second flow, of another shape than the CTR demo, for the lifecycle tests.

Ride requests and driver accepts (two stream topics) → ``matched`` (a LEFT interval join:
was the request accepted within ``accept_window`` minutes?) → ``rider_hourly`` (hourly
features per rider, rowtime ``window_time``) → ``samples`` (each request joined to its
rider's features of the previous hour: point in time) → ``train`` (Python, once per hour of
samples) → ``evaluate`` (DuckDB, after each training run).

The truth of every node's output is computed here in pandas from the topic files, so a test
counts missing, duplicated and wrong rows against it.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from ultron_nb import experiments as ex
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.flow.build import define_node

HOUR_MS = 3_600_000
FLINK_NODES = ("matched", "rider_hourly", "samples")
T0 = datetime(2025, 3, 1)

MATCHED = """
SELECT r.req_id, r.rider_id, r.city, r.ts,
       CASE WHEN a.req_id IS NULL THEN 0 ELSE 1 END AS accepted
FROM requests r LEFT JOIN accepts a
  ON r.req_id = a.req_id AND a.ts BETWEEN r.ts AND r.ts + INTERVAL '${accept_window}' MINUTE
"""
RIDER_HOURLY = """
SELECT rider_id, window_time AS ts, COUNT(*) AS requests, SUM(accepted) AS accepted
FROM TABLE(TUMBLE(TABLE matched, DESCRIPTOR(ts), INTERVAL '1' HOUR))
GROUP BY rider_id, window_start, window_end, window_time
"""
SAMPLES = """
SELECT m.req_id, m.rider_id, m.city, m.ts, m.accepted, f.requests AS prev_requests
FROM matched m LEFT JOIN rider_hourly f
  ON m.rider_id = f.rider_id AND f.ts BETWEEN m.ts - INTERVAL '1' HOUR AND m.ts
"""
TRAIN = '''
def train(ctx):
    import json, os
    import pandas as pd

    start, end = (pd.Timestamp(ms, unit="ms") for ms in ctx.window)
    rows = ctx.input_frame("samples")
    hour = rows[(rows.ts >= start) & (rows.ts < end)]
    rates = (hour.groupby("city").agg(n=("req_id", "size"), accepted=("accepted", "sum"))
             .reset_index())
    rates["hour"] = str(start)
    rates.to_parquet(ctx.output_path / f"rates-{start:%Y%m%dT%H}.parquet")
    with open(os.path.join(ctx.params["ledger"], "train.jsonl"), "a") as f:
        f.write(json.dumps({"hour": str(start), "rows": len(hour), "pid": os.getpid(),
                            "attempt": ctx.attempt}) + "\\n")
'''
EVALUATE = """
SELECT hour, SUM(n) AS n, SUM(accepted) AS accepted FROM train GROUP BY hour ORDER BY hour
"""


def define_rides(ws: Any, ledger: Path, *, flow: str = "rides", partitions: int = 2,
                 accept_window: str = "5") -> Any:
    """Define the rides flow in ``ws``; ``ledger`` is where ``train`` counts its runs."""
    opts = {"checkpoint_interval": "1 s"}
    nodes = [
        define_node("requests", "req_id BIGINT, rider_id BIGINT, city STRING, ts TIMESTAMP(3)",
                    kind="topic", time="ts", watermark="5 s", partitions=partitions,
                    key="rider_id"),
        define_node("accepts", "req_id BIGINT, driver_id BIGINT, ts TIMESTAMP(3)",
                    kind="topic", time="ts", watermark="5 s", partitions=partitions,
                    key="req_id"),
        define_node("matched", MATCHED, params={"accept_window": accept_window},
                    options=opts),
        define_node("rider_hourly", RIDER_HOURLY, options=opts),
        define_node("samples", SAMPLES, options=opts),
        define_node("train", TRAIN, kind="python", inputs=["samples"], after=["samples"],
                    boundary="1h", params={"ledger": str(ledger)}),
        define_node("evaluate", EVALUATE, kind="duckdb", after=["train"]),
    ]
    for node in nodes:
        ws.define(flow, node)
    return ws.flow(flow)


# ---------------------------------------------------------------- data
class Rides:
    """Generated requests and accepts, appended hour by hour as topic segments."""

    def __init__(self, home: Path, *, partitions: int = 2, per_hour: int = 120, riders: int = 40,
                 seed: int = 7):
        self.home = home
        self.partitions = partitions
        self.per_hour = per_hour
        self.riders = riders
        self.rng = random.Random(seed)
        self.next_id = 1
        self.requests = LocalTopic(home / "topics" / "requests", partitions,
                                   [("req_id", "BIGINT"), ("rider_id", "BIGINT"),
                                    ("city", "STRING"), ("ts", "TIMESTAMP(3)")], "ts").create()
        self.accepts = LocalTopic(home / "topics" / "accepts", partitions,
                                  [("req_id", "BIGINT"), ("driver_id", "BIGINT"),
                                   ("ts", "TIMESTAMP(3)")], "ts").create()

    def hour(self, h: int, *, segments: int = 2) -> None:
        """Append hour ``h`` (0-based from T0): each partition gets ``segments`` segments,
        ordered in event time within the partition."""
        reqs: list[dict[str, Any]] = []
        accs: list[dict[str, Any]] = []
        start = T0 + timedelta(hours=h)
        for _ in range(self.per_hour):
            ts = start + timedelta(milliseconds=self.rng.randrange(HOUR_MS - 60_000))
            rid = self.next_id
            self.next_id += 1
            rider = self.rng.randrange(self.riders)
            reqs.append({"req_id": rid, "rider_id": rider, "city": f"c{rider % 3}",
                         "ts": _fmt(ts)})
            if self.rng.random() < 0.7:  # accepted 0-4 min later; some after the window
                late = self.rng.random() < 0.1
                delay = timedelta(minutes=self.rng.uniform(6, 9) if late else
                                  self.rng.uniform(0, 4))
                accs.append({"req_id": rid, "driver_id": self.rng.randrange(500),
                             "ts": _fmt(ts + delay)})
        self._append(self.requests, reqs, "rider_id", segments)
        self._append(self.accepts, accs, "req_id", segments)

    def _append(self, topic: LocalTopic, rows: list[dict[str, Any]], key: str,
                segments: int) -> None:
        for k in range(self.partitions):
            mine = sorted((r for r in rows if r[key] % self.partitions == k),
                          key=lambda r: r["ts"])
            size = max(1, -(-len(mine) // segments))
            for i in range(0, len(mine), size):
                topic.append(k, mine[i:i + size])


def _fmt(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def topic_frame(path: Path) -> pd.DataFrame:
    rows = [json.loads(line) for seg in sorted(path.glob("p*/seg-*.jsonl"))
            for line in seg.read_text().splitlines() if line.strip()]
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"])
    return frame


# ---------------------------------------------------------------- truth
def truth(home: Path, accept_window_min: float = 5.0) -> dict[str, pd.DataFrame]:
    """Each Flink node's exact output, from the topic files."""
    reqs = topic_frame(home / "topics" / "requests")
    accs = topic_frame(home / "topics" / "accepts")
    joined = reqs.merge(accs[["req_id", "ts"]].rename(columns={"ts": "acc_ts"}), on="req_id",
                        how="left")
    ok = (joined.acc_ts >= joined.ts) & (
        joined.acc_ts <= joined.ts + pd.Timedelta(minutes=accept_window_min))
    joined["accepted"] = ok.astype(int)
    matched = joined.groupby("req_id", as_index=False).agg(
        rider_id=("rider_id", "first"), city=("city", "first"), ts=("ts", "first"),
        accepted=("accepted", "max"))
    matched["hour"] = matched.ts.dt.floor("h")
    hourly = matched.groupby(["rider_id", "hour"], as_index=False).agg(
        requests=("req_id", "size"), accepted=("accepted", "sum"))
    prev = hourly.rename(columns={"requests": "prev_requests"})[
        ["rider_id", "hour", "prev_requests"]]
    prev["hour"] = prev["hour"] + pd.Timedelta(hours=1)  # features of the previous hour
    samples = matched.merge(prev, on=["rider_id", "hour"], how="left")
    return {"matched": matched, "rider_hourly": hourly, "samples": samples}


def compare(got: pd.DataFrame, want: pd.DataFrame, key: list[str], cols: list[str]
            ) -> dict[str, int]:
    """missing / duplicates / wrong of ``got`` against ``want`` (rows keyed by ``key``)."""
    dup = int(got.duplicated(key).sum())
    g = got.drop_duplicates(key).set_index(key)
    w = want.set_index(key)
    missing = len(w.index.difference(g.index))
    extra = len(g.index.difference(w.index))
    both = w.index.intersection(g.index)
    wrong = 0
    for c in cols:
        a, b = g.loc[both, c], w.loc[both, c]
        wrong += int(((a != b) & ~(a.isna() & b.isna())).sum())
    return {"missing": missing, "duplicates": dup, "extra": extra, "wrong": wrong}


def ledger(path: Path) -> list[dict[str, Any]]:
    file = path / "train.jsonl"
    return [json.loads(x) for x in file.read_text().splitlines()] if file.exists() else []


# ---------------------------------------------------------------- checks
def output(ws: Any, experiment: str, node: str) -> pd.DataFrame:
    return ex.preview(ws, node, experiment=experiment, limit=10**7)


def exact_before(ws: Any, experiment: str, hours: int) -> dict[str, dict[str, int]]:
    """Each Flink node's output for event time before T0 + ``hours`` against the truth."""
    want = truth(ws.settings.home)
    cut = pd.Timestamp(T0) + pd.Timedelta(hours=hours)
    got = {n: output(ws, experiment, n) for n in FLINK_NODES}
    report = {}
    for node, key, cols in (("matched", ["req_id"], ["accepted", "rider_id"]),
                            ("samples", ["req_id"], ["accepted", "prev_requests"])):
        g, w = got[node], want[node]
        report[node] = compare(g[g.ts < cut], w[w.ts < cut], key, cols)
    g = got["rider_hourly"].copy()
    g["hour"] = g.ts.dt.floor("h")
    w = want["rider_hourly"]
    report["rider_hourly"] = compare(g[g.hour < cut - pd.Timedelta(hours=1)],
                                     w[w.hour < cut - pd.Timedelta(hours=1)],
                                     ["rider_id", "hour"], ["requests", "accepted"])
    return report


def clean(report: dict[str, dict[str, int]]) -> bool:
    return all(not any(v.values()) for v in report.values())


def trained_hours(out: Path) -> list[str]:
    return [r["hour"] for r in ledger(out)]
