"""The click-log generator: realistic, bounded disorder, ordered segments, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

from ultron_nb.engines.topics import LocalTopic
from ultron_nb.services.datagen import gen_clicklog, parse_ts


def _read(topic: Path) -> dict[int, list[list[dict]]]:
    t = LocalTopic.open(topic)
    return {k: [[json.loads(x) for x in s.read_text().splitlines()] for s in t.segments(k)]
            for k in range(t.partitions)}


def test_same_seed_same_files(tmp_path: Path) -> None:
    a = gen_clicklog(tmp_path / "a", rate=50, duration=60, seed=7, partitions=3)
    b = gen_clicklog(tmp_path / "b", rate=50, duration=60, seed=7, partitions=3)
    assert a.impression_count == b.impression_count > 2000
    for name in ("impressions", "clicks"):
        assert _read(tmp_path / "a" / name) == _read(tmp_path / "b" / name)
    c = gen_clicklog(tmp_path / "c", rate=50, duration=60, seed=8, partitions=3)
    assert c.impression_count != a.impression_count or _read(tmp_path / "c" / "clicks") != \
        _read(tmp_path / "a" / "clicks")


def test_realistic_and_bounded_disorder(tmp_path: Path) -> None:
    r = gen_clicklog(tmp_path, rate=100, duration=120, seed=1, partitions=4, disorder=2.0,
                     ctr=0.05, max_click_delay=60)
    imps = _read(tmp_path / "impressions")
    clicks = _read(tmp_path / "clicks")
    all_imps = {i["imp_id"]: i for segs in imps.values() for s in segs for i in s}
    all_clicks = [c for segs in clicks.values() for s in segs for c in s]
    assert len(all_imps) == r.impression_count and len(all_clicks) == r.click_count
    assert 0.02 < r.click_count / r.impression_count < 0.12
    assert len({i["item_id"] for i in all_imps.values()}) > 50
    for k, segs in imps.items():
        assert len(segs) == 1  # one segment per partition per call
        assert all(i["user_id"] % 4 == k for i in segs[0])  # keyed by user
        high = 0
        for row in segs[0]:  # every row at most `disorder` behind the latest before it
            ts = parse_ts(row["ts"])
            assert ts >= high - 2000
            high = max(high, ts)
    for c in all_clicks:
        imp = all_imps[c["imp_id"]]
        delay = parse_ts(c["ts"]) - parse_ts(imp["ts"])
        assert 0 < delay <= 60_000 and c["user_id"] == imp["user_id"]


def test_calls_continue_the_log_and_keep_late_clicks_for_later(tmp_path: Path) -> None:
    first = gen_clicklog(tmp_path, rate=20, duration=60, seed=3, flush_clicks=False)
    second = gen_clicklog(tmp_path, rate=20, duration=60, seed=3)
    assert first.end == second.start
    assert first.pending_clicks > 0 and second.pending_clicks == 0
    clicks = _read(tmp_path / "clicks")
    for segs in clicks.values():
        # Segment n+1 starts after segment n ends (up to the disorder): readers keep order.
        if len(segs) == 2:
            assert min(parse_ts(c["ts"]) for c in segs[1]) >= \
                max(parse_ts(c["ts"]) for c in segs[0]) - 2000
    imps = _read(tmp_path / "impressions")
    ids = sorted(i["imp_id"] for segs in imps.values() for s in segs for i in s)
    assert ids == list(range(len(ids)))  # unique, continuing ids
    total = sum(len(s) for segs in clicks.values() for s in segs)
    assert total == first.click_count + second.click_count
