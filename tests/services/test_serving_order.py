"""The serving node reads its request topic in event-time order: a request is released only
once every partition has passed it, or the writer's complete-through mark has and every
segment has been read (pure logic on a real local topic; no daemon)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ultron_nb.engines.topics import COMPLETE_THROUGH, LocalTopic, TopicTail
from ultron_nb.services.datagen import REQUEST_COLUMNS, format_ts
from ultron_nb.services.serving import Server


def server(path: Path) -> Server:
    return Server(None, "m", "requests", "champion", (0, 100), 1, None, None, "x", None,
                  TopicTail(path))  # type: ignore[arg-type]


def rows(ids: range, at: int) -> list[dict[str, Any]]:
    return [{"req_id": i, "user_id": i, "candidates": "1", "hour": 0, "dwell": 1.0,
             "ts": format_ts(at + i)} for i in ids]


def test_a_partition_read_ahead_waits_for_the_others_and_the_writers_mark(
        tmp_path: Path) -> None:
    topic = LocalTopic(tmp_path / "requests", 2, list(REQUEST_COLUMNS), "ts").create()
    topic.append(0, rows(range(0, 100), 0))  # the writer is still at partition 1
    s = server(topic.path)
    assert s.take(1000) == []  # partition 1 unseen and no mark: nothing is due
    topic.append(1, rows(range(100, 200), 0))
    topic.write_manifest(**{COMPLETE_THROUGH: 200})  # the writer's promise, after its writes
    assert [r["req_id"] for r in s.take(1000)] == list(range(200))
    # A later write: partition 1 first, then partition 0 with earlier event times.
    topic.append(1, rows(range(300, 310), 1000))
    assert s.take(1000) == []  # the mark still says 200, and partition 0 is at 99
    topic.append(0, rows(range(200, 210), 1000))
    topic.write_manifest(**{COMPLETE_THROUGH: 1400})
    assert [r["req_id"] for r in s.take(1000)] == [*range(200, 210), *range(300, 310)]
    assert not s.held


def test_without_a_mark_a_quiet_partition_releases_after_idle(tmp_path: Path) -> None:
    topic = LocalTopic(tmp_path / "requests", 2, list(REQUEST_COLUMNS), "ts").create()
    topic.append(0, rows(range(0, 10), 0))
    topic.append(1, rows(range(10, 20), 0))
    s = server(topic.path)
    s.idle = 0.0
    got = s.take(1000)  # both partitions seen: up to the lower one's latest (19 vs 9)
    assert [r["req_id"] for r in got] == list(range(10))
    assert [r["req_id"] for r in s.take(1000)] == list(range(10, 20))  # quiet: the rest
