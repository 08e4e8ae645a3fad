"""Backtracking end to end: HDFS-style history → prepared ordered partitions → the live
node's own SQL replayed on Flink → the replay equals the live stream's output."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from ultron_nb import experiments as ex
from ultron_nb.errors import ConfigError, FlowError
from ultron_nb.services import backtrack
from ultron_nb.services.datagen import gen_clicklog, parse_ts
from ultron_nb.services.replay import replay

from .flink_flows import define_ctr_flow, topic_rows, wait_for, watermark_at_least

pytestmark = [pytest.mark.flink, pytest.mark.slow]


def write_history(rows: list[dict[str, Any]], root: Path, seed: int) -> None:
    """HDFS-style: ROOT/date=D/hour=H/part-N.jsonl, rows shuffled inside each hour."""
    by_hour: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_hour.setdefault((r["ts"][:10], r["ts"][11:13]), []).append(r)
    rng = random.Random(seed)
    for (date, hour), items in by_hour.items():
        rng.shuffle(items)
        folder = root / f"date={date}" / f"hour={hour}"
        folder.mkdir(parents=True)
        half = len(items) // 2
        for i, part in enumerate((items[:half], items[half:])):
            (folder / f"part-{i}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in part))


def test_replay_of_history_equals_the_live_stream(flink_workspace: Any, tmp_path: Path) -> None:
    ws = flink_workspace
    gen_clicklog(ws.settings, rate=3, duration=5400, partitions=2, seed=21)
    define_ctr_flow(ws, "ctr", partitions=2)
    ws.remove("ctr", "ctr_minute")
    ex.launch(ws, "ctr", name="live")
    wait_for(watermark_at_least(ws, "live", "label_join", "2025-01-01 01:15:00"), timeout=300)

    hist = tmp_path / "hist"
    write_history(topic_rows(ws, "impressions"), hist / "impressions", 1)
    write_history(topic_rows(ws, "clicks"), hist / "clicks", 2)
    window = ("2025-01-01 00:00:00", "2025-01-01 02:00:00")
    prepared = {}
    for topic in ("impressions", "clicks"):
        manifest = backtrack.prepare(hist / topic, key="imp_id", time="ts", partitions=2,
                                     start=window[0], end=window[1],
                                     out=tmp_path / "prep" / topic)
        assert backtrack.check_order(manifest.path).ok
        prepared[topic] = manifest.path
    assert sum(backtrack.read_manifest(prepared["impressions"]).counts) == len(
        topic_rows(ws, "impressions"))

    st = replay(ws, "ctr", "label_join", inputs=prepared, name="bt")
    assert st["label_join"].state == "finished", str(st)
    replayed = ex.preview(ws, "label_join", experiment="bt", limit=10**7)
    live = ex.preview(ws, "label_join", experiment="live", limit=10**7)
    truth = [i for i in topic_rows(ws, "impressions")
             if parse_ts(i["ts"]) < parse_ts("2025-01-01 01:15:00")]
    result = backtrack.check_consistency(
        replayed, live, key="imp_id", time="ts", values=["label"],
        window=("2025-01-01 00:00:00", "2025-01-01 01:15:00"))
    assert result.ok, result.message()
    assert replayed.ts.notna().all()  # whole-second times parse too
    in_window = replayed[replayed.ts < "2025-01-01 01:15:00"]
    assert len(in_window) == len(truth)  # counted against the truth: nothing dropped as late
    assert in_window.imp_id.is_unique
    # The replay did not disturb the live experiment.
    assert ex.status(ws, "live")["label_join"].state == "running"


def test_replay_input_errors_name_the_fault(flink_workspace: Any, tmp_path: Path) -> None:
    ws = flink_workspace
    define_ctr_flow(ws, "ctr", partitions=2)
    with pytest.raises(ConfigError, match="needs --input"):
        replay(ws, "ctr", "label_join", inputs={})
    with pytest.raises(ConfigError, match=r"--input impressions=.*not a prepared topic"):
        replay(ws, "ctr", "label_join", inputs={"impressions": tmp_path / "nothing"})
    from ultron_nb.services.replay import replay_flow

    with pytest.raises(FlowError, match="node 'label_join' does not read 'ctr_minute'"):
        replay_flow(ws.flow("ctr"), "label_join", {"ctr_minute": tmp_path})
