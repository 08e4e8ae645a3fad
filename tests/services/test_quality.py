"""Data quality on running links: rules measured by the scheduler daemon beside the jobs,
per event-time window of stream outputs and once per run of batch outputs; each injected
fault is a ``quality/...`` event for the window where it happened, and nothing is flagged on
clean data.

- a readings chain (a topic → ``clean`` → ``enriched``, two Flink jobs; a DuckDB node per
  5-minute window; a Python alarm on the violation event): a null burst, duplicated keys and
  a shifted distribution, each in its own minute;
- a live feed whose second partition stalls: the freshness rule fires once the watermark
  trails the wall clock, not before;
- the CTR link (impressions + clicks → label_join): a null burst of user ids in one minute.
"""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.services.flink_flows import define_ctr_flow
from tests.support.waiting import wait_until
from ultron_nb import experiments as ex
from ultron_nb.engines.quality_watcher import STATE_ROW
from ultron_nb.events import recent
from ultron_nb.flow import identities
from ultron_nb.flow.build import define_node
from ultron_nb.services.datagen import gen_clicklog
from ultron_nb.services.live import decorations
from ultron_nb.services.quality import define_rules, first_failing, quality_report
from ultron_nb.store import triggers

pytestmark = [pytest.mark.flink, pytest.mark.slow]

READINGS = "reading_id STRING, sensor STRING, temp DOUBLE, ts TIMESTAMP(3)"
T0 = datetime(2025, 6, 1)
FAULTS = {2: "nulls", 3: "dupes", 4: "shift"}
ALARM = '''
def alarm(ctx):
    import json, os
    value = ctx.trigger["event"]["value"]
    with open(os.path.join(ctx.params["out"], "alarms.jsonl"), "a") as f:
        f.write(json.dumps({"rule": value["rule"], "window": value["window_start"]}) + "\\n")
'''


def _violations(ws: Any, experiment: str) -> list[dict[str, Any]]:
    return [e.value for e in recent(ws.db, f"quality/{experiment}/*", limit=1000)]


def _measured(ws: Any, experiment: str, node: str, rule: str) -> int:
    for row in quality_report(ws, experiment).table.rows:
        if row[0] == node and row[1] == rule:
            return int(row[7])
    return 0


def _freshness(ws: Any, experiment: str) -> dict[str, Any] | None:
    with ws.db.read() as conn:
        state = triggers.load_state(conn, STATE_ROW)
    return state.get("nodes", {}).get(f"{experiment}/passthrough", {}).get("last", {}) \
        .get("fresh")


def _minute(m: int, rng: random.Random) -> list[dict[str, Any]]:
    fault = FAULTS.get(m)
    rows = []
    for i in range(300):
        temp: float | None = rng.gauss(20, 2)
        if fault == "nulls" and i % 3 == 0:
            temp = None
        if fault == "shift":
            temp = (temp or 0) + 15
        rows.append({"reading_id": f"r{m}-{i}", "sensor": f"s{i % 7}", "temp": temp,
                     "ts": T0 + timedelta(minutes=m, seconds=i / 5)})
    if fault == "dupes":
        rows += [dict(r, ts=r["ts"] + timedelta(seconds=30)) for r in rows[:4]]
        rows.sort(key=lambda r: r["ts"])
    return rows


def test_faults_on_a_running_chain_are_caught_in_their_windows(scheduled_workspace: Any,
                                                               tmp_path: Path) -> None:
    ws = scheduled_workspace
    opts = {"checkpoint_interval": "1 s"}
    for node in (
        define_node("readings", READINGS, kind="topic", time="ts", watermark="5 s",
                    partitions=2, key="sensor"),
        define_node("clean", "SELECT reading_id, sensor, temp, ts FROM readings",
                    options=opts),
        define_node("enriched", "SELECT reading_id, sensor, temp, temp * 1.8 + 32 AS temp_f, "
                                "ts FROM clean", options=opts),
        define_node("summary", "SELECT count(*) AS n, count(temp) AS with_temp FROM enriched",
                    kind="duckdb", after=["enriched"], boundary="5m"),
        define_node("alarm", ALARM, kind="python", on_event="quality/qx/enriched/nulls_temp",
                    params={"out": str(tmp_path)}),
    ):
        ws.define("readings", node)
    before = ws.flow("readings")
    define_rules(ws, "readings", "clean", "unique(reading_id)")
    define_rules(ws, "readings", "enriched", """
        null_rate(temp) <= 0.05
        unique(reading_id)
        drift(temp) <= 0.5
        temp between -40 and 60
        rows <= 1000
        check temp_f IS NULL OR temp_f > temp
    """)
    define_rules(ws, "readings", "summary", "check n > 0 AND with_temp <= n")
    flow = ws.flow("readings")
    assert flow.version == before.version + 3
    assert identities(flow) == identities(before)  # rules unshare and restart nothing

    rng = random.Random(11)
    rows = [r for m in range(7) for r in _minute(m, rng)]
    rows += [{"reading_id": f"flush{p}", "sensor": "flush", "temp": 20.0,
              "ts": T0 + timedelta(minutes=9)} for p in range(2)]
    frame = pd.DataFrame(rows)
    for p in range(2):
        ws.append("readings", frame.iloc[p::2], partition=p, flow="readings")
    ex.launch(ws, "readings", name="qx")

    # clean's watermark reaches 08:55 (the flush rows); enriched's trails by a step of the
    # chain (the watermark a row carries is its producer's when it wrote it): 06:54.8
    wait_until(lambda: _measured(ws, "qx", "enriched", "nulls_temp") >= 6
               and _measured(ws, "qx", "clean", "unique_reading_id") >= 8, 240,
               "the windows of both stream nodes measured")
    wait_until(lambda: _measured(ws, "qx", "summary", "check") >= 1, 120,
               "the summary's first run measured")
    found = sorted((v["node"], v["rule"], v["window_start"]) for v in _violations(ws, "qx"))
    at = {m: str(T0 + timedelta(minutes=m)) for m in range(8)}
    assert found == sorted([("clean", "unique_reading_id", at[3]),
                            ("enriched", "nulls_temp", at[2]),
                            ("enriched", "unique_reading_id", at[3]),
                            ("enriched", "drift_temp", at[4])]), found
    by = {(v["node"], v["rule"]): v for v in _violations(ws, "qx")}
    dupes = by[("enriched", "unique_reading_id")]
    assert dupes["value"] == 4 and {s["reading_id"] for s in dupes["samples"]} == \
        {f"r3-{i}" for i in range(4)}
    nulls = by[("enriched", "nulls_temp")]
    assert nulls["value"] == pytest.approx(100 / 300) and nulls["rows"] == 300
    assert nulls["window_end"] == str(T0 + timedelta(minutes=3))
    # in minute 3 both failed: the one to look at is the upstream one
    assert first_failing(flow, {"clean", "enriched"}) == ["clean"]
    # an on-event edge acted on the violation: the alarm ran once, for that window
    wait_until(lambda: (tmp_path / "alarms.jsonl").exists(), 120, "the alarm node's run")
    alarms = [json.loads(x) for x in (tmp_path / "alarms.jsonl").read_text().splitlines()]
    assert alarms == [{"rule": "nulls_temp", "window": at[2]}]
    rep = quality_report(ws, "qx")
    text = str(rep)
    assert "enriched" in text and "drift_temp" in text and "violations of qx" in text
    assert rep.failing == {} and rep.look_first == []  # the last windows are clean
    ex.stop(ws, "qx")


def _feed(ws: Any, stop: threading.Event, stall: threading.Event,
          last: dict[int, datetime]) -> None:
    n = 0
    while not stop.is_set():
        now = datetime.now(UTC).replace(tzinfo=None)
        for p in (0, 1):
            if p == 1 and stall.is_set():
                continue
            n += 1
            ws.append("sensors", pd.DataFrame([{"reading_id": f"l{n}", "sensor": f"s{p}",
                                                "temp": 20.0, "ts": now}]),
                      partition=p, flow="live")
            last[p] = now
        stop.wait(0.5)


def test_a_stalled_partition_fails_freshness_only_once_it_stalls(scheduled_workspace: Any) -> None:
    ws = scheduled_workspace
    ws.define("live", define_node("sensors", READINGS, kind="topic", time="ts",
                                  watermark="1 s", partitions=2))
    ws.define("live", define_node("passthrough", "SELECT reading_id, sensor, temp, ts "
                                  "FROM sensors", options={"checkpoint_interval": "1 s"}))
    define_rules(ws, "live", "passthrough", "fresh: freshness <= 30 s")
    stop, stall = threading.Event(), threading.Event()
    last: dict[int, datetime] = {}
    feeder = threading.Thread(target=_feed, args=(ws, stop, stall, last), daemon=True)
    feeder.start()
    try:
        ex.launch(ws, "live", name="lx")

        first = wait_until(lambda: _freshness(ws, "lx"), 180, "a freshness measurement")
        # clean data for 15 s of measurements (one a second): none fails
        wait_until(lambda: (_freshness(ws, "lx") or {}).get("at", 0) > first["at"] + 15,
                   60, "15 s of freshness measurements")
        assert _violations(ws, "lx") == []
        assert _freshness(ws, "lx")["ok"] and _freshness(ws, "lx")["value"] < 30
        stall.set()
        stalled_at = time.time()
        wait_until(lambda: _violations(ws, "lx"), 180, "a freshness violation")
        [violation] = _violations(ws, "lx")
        assert violation["rule"] == "fresh" and violation["value"] > 30
        assert violation["at"] >= stalled_at + 25  # not before the data stalled
        mark = datetime.fromisoformat(violation["window_start"])
        assert abs((mark - last[1]).total_seconds()) <= 5  # where partition 1 stopped
        assert quality_report(ws, "lx").failing == {"passthrough": ["fresh"]}
        assert quality_report(ws, "lx").look_first == ["passthrough"]
        # the DAG (show, watch, the side panel) marks the node
        marks = decorations(ws, ws.flow("live"), "lx")
        assert marks["quality"] == {"passthrough": ["fresh"]}
        assert "✗ fresh" in ws.render(ws.flow("live"), "dot", **marks)
    finally:
        stop.set()
        feeder.join(10)
    ex.stop(ws, "lx")


def test_a_null_burst_on_the_ctr_link_is_caught_in_its_minute(scheduled_workspace: Any) -> None:
    ws = scheduled_workspace
    gen_clicklog(ws.settings, rate=20, duration=180, partitions=4, seed=5, flush_clicks=False)
    define_ctr_flow(ws)
    define_rules(ws, "ctr", "label_join", """
        null_rate(user_id) <= 0
        unique(imp_id)
        label between 0 and 1
    """)
    start = datetime(2025, 1, 1, 0, 3)
    burst = pd.DataFrame([{"imp_id": 10**9 + i, "user_id": None, "item_id": 1, "position": 1,
                           "hour": 0, "dwell": 1.0, "ts": start + timedelta(seconds=i / 4)}
                          for i in range(240)])
    for p in range(4):
        ws.append("impressions", burst.iloc[p::4], partition=p, flow="ctr")
    # 14 more minutes: the join's output watermark trails its input by its 10-minute window
    gen_clicklog(ws.settings, rate=20, duration=840, partitions=4, seed=6,
                 start=datetime(2025, 1, 1, 0, 4), flush_clicks=True)
    ex.launch(ws, "ctr", name="cq")
    wait_until(lambda: _measured(ws, "cq", "label_join", "unique_imp_id") >= 6, 300,
               "six minutes of label_join measured")
    found = [(v["rule"], v["window_start"]) for v in _violations(ws, "cq")]
    assert found == [("nulls_user_id", "2025-01-01 00:03:00")], found
    [v] = _violations(ws, "cq")
    assert v["value"] == 1.0 and v["rows"] == 240 and v["samples"][0]["user_id"] is None
    ex.stop(ws, "cq")
