"""The local topic layout: segments are published whole and never overwrite each other."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ultron_nb.engines.topics import LocalTopic


def test_concurrent_writers_of_a_partition_each_get_their_own_segment(tmp_path: Path) -> None:
    topic = LocalTopic(tmp_path / "t", 1, [("w", "INT"), ("i", "INT")], None).create()

    def write(w: int) -> None:
        for i in range(25):
            topic.append(0, [{"w": w, "i": i}] * 3)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    segments = topic.segments(0)
    assert [s.name for s in segments] == [f"seg-{n:08d}.jsonl" for n in range(150)]
    rows = [json.loads(x) for s in segments for x in s.read_text().splitlines()]
    assert sorted((r["w"], r["i"]) for r in rows[::3]) == [(w, i) for w in range(6)
                                                           for i in range(25)]
    # Each writer's segments in its own order; no temporary file left behind.
    for w in range(6):
        assert [r["i"] for r in rows[::3] if r["w"] == w] == list(range(25))
    assert [p.name for p in topic.partition_dir(0).iterdir() if p.name.startswith(".")] == []
