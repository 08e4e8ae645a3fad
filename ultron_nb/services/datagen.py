"""Generated click logs: impressions and clicks for demos, tests and benchmarks.

``gen_clicklog`` writes two local topics (default ``<home>/topics/impressions`` and
``<home>/topics/clicks``) with the same number of partitions, keyed by user:

* users with skewed activity, items with skewed popularity and their own CTR
  (a Beta distribution around ``ctr``), a position effect on the click probability;
* click delays drawn from an exponential distribution, capped at ``max_click_delay``;
* bounded disorder: inside a partition an event is written at most ``disorder`` seconds out
  of event-time order (a watermark delay ≥ ``disorder`` loses nothing);
* one segment per partition and topic per call (or per ``tick`` in live mode), so the files
  of a partition are in order — what the Flink readers in
  :mod:`ultron_nb.engines.flink.ddl` rely on.

Calls continue a log: the next call starts where the previous ended, with fresh ids, and
clicks that fall after the end of a call are kept (``_pending_clicks.json``, hidden from
Flink) for the next one unless ``flush_clicks`` writes them now. Same seed, same arguments,
same files.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ultron_nb.config import Settings
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMPRESSION_COLUMNS: list[tuple[str, str]] = [
    ("imp_id", "BIGINT"), ("user_id", "BIGINT"), ("item_id", "BIGINT"),
    ("position", "INT"), ("ts", "TIMESTAMP(3)"),
]
CLICK_COLUMNS: list[tuple[str, str]] = [
    ("imp_id", "BIGINT"), ("user_id", "BIGINT"), ("item_id", "BIGINT"),
    ("ts", "TIMESTAMP(3)"),
]
DEFAULT_START = datetime(2025, 1, 1, 0, 0, 0)
PENDING = "_pending_clicks.json"
_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def format_ts(ms: int) -> str:
    """Milliseconds since the epoch → ``2025-01-01 00:00:00.123`` (Flink's SQL format, UTC)."""
    dt = datetime(1970, 1, 1) + timedelta(milliseconds=int(ms))
    return dt.strftime(_TS_FORMAT)[:-3]


def parse_ts(text: str) -> int:
    """The inverse of :func:`format_ts`."""
    dt = datetime.strptime(text if "." in text else text + ".000", _TS_FORMAT)
    return int((dt - datetime(1970, 1, 1)).total_seconds() * 1000)


def _to_ms(value: datetime | str | float | int) -> int:
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("T", " ").replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return int((value - datetime(1970, 1, 1)).total_seconds() * 1000)


@dataclass(repr=False)
class ClicklogResult:
    """What one call wrote."""

    impressions: Path
    clicks: Path
    partitions: int
    impression_count: int
    click_count: int
    start: str  # event time of the first impression window (SQL timestamp text)
    end: str  # end of this call's impression window
    pending_clicks: int = 0
    segments: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"clicklog: {self.impression_count} impressions, {self.click_count} clicks "
            f"({self.partitions} partitions) from {self.start} to {self.end} → "
            f"{self.impressions}, {self.clicks}"
        )

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        import html

        return f"<p><b>clicklog</b> {html.escape(str(self)[10:])}</p>"


class _Model:
    """Users, items and per-item CTR, drawn once per seed."""

    def __init__(self, rng: Any, users: int, items: int, ctr: float):
        import numpy as np

        self.users = users
        self.items = items
        activity = rng.lognormal(0.0, 1.0, users)
        self.user_p = activity / activity.sum()
        ranks = np.arange(1, items + 1)
        popularity = 1.0 / ranks**0.9
        rng.shuffle(popularity)
        self.item_p = popularity / popularity.sum()
        concentration = 20.0
        a = max(ctr * concentration, 1e-3)
        b = max((1.0 - ctr) * concentration, 1e-3)
        self.item_ctr = rng.beta(a, b, items)


def _batch(
    rng: Any,
    model: _Model,
    *,
    first_id: int,
    start_ms: int,
    span_ms: int,
    rate: float,
    mean_click_delay: float,
    max_click_delay: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Impressions in [start, start + span) and all their clicks (any time)."""
    import numpy as np

    n = int(rng.poisson(rate * span_ms / 1000.0)) if rate > 0 else 0
    if n == 0:
        return [], []
    offsets = np.sort(rng.integers(0, span_ms, n))
    ts = start_ms + offsets
    users = rng.choice(model.users, n, p=model.user_p)
    items = rng.choice(model.items, n, p=model.item_p)
    position = rng.integers(1, 11, n)
    p_click = model.item_ctr[items] * (1.6 / (1.0 + 0.12 * position))
    clicked = rng.random(n) < np.clip(p_click, 0.0, 1.0)
    delays = np.minimum(rng.exponential(mean_click_delay, n), max_click_delay)
    delays_ms = np.maximum((delays * 1000).astype(np.int64), 200)
    imps = [
        {"imp_id": first_id + i, "user_id": int(users[i]), "item_id": int(items[i]),
         "position": int(position[i]), "ts": int(ts[i])}
        for i in range(n)
    ]
    clicks = [
        {"imp_id": first_id + int(i), "user_id": int(users[i]), "item_id": int(items[i]),
         "ts": int(ts[i] + delays_ms[i])}
        for i in np.flatnonzero(clicked)
    ]
    return imps, clicks


def _disordered(rng: Any, rows: list[dict[str, Any]], disorder_ms: int) -> list[dict[str, Any]]:
    """Rows in event-time order, each delayed by up to ``disorder_ms`` in write order."""
    if disorder_ms <= 0 or len(rows) < 2:
        return sorted(rows, key=lambda r: r["ts"])
    jitter = rng.integers(0, disorder_ms + 1, len(rows))
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["ts"] + int(jitter[i]), i))
    return [rows[i] for i in order]


def _write(topic: LocalTopic, rng: Any, rows: list[dict[str, Any]], disorder_ms: int) -> int:
    by_part: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_part.setdefault(row["user_id"] % topic.partitions, []).append(row)
    written = 0
    for k in range(topic.partitions):
        part = _disordered(rng, by_part.get(k, []), disorder_ms)
        if part:
            topic.append(k, ({**r, "ts": format_ts(r["ts"])} for r in part))
            written += 1
    return written


def _open_or_create(path: Path, columns: list[tuple[str, str]], partitions: int) -> LocalTopic:
    try:
        topic = LocalTopic.open(path)
    except DataError:
        return LocalTopic(path, partitions, list(columns), "ts").create()
    if topic.partitions != partitions:
        raise ConfigError(
            f"{path} already has {topic.partitions} partitions; generate with "
            f"--partitions {topic.partitions} or into another topic"
        )
    return topic


def gen_clicklog(
    target: Settings | Path | str,
    *,
    rate: float = 100.0,
    duration: float = 60.0,
    users: int = 1000,
    items: int = 200,
    partitions: int = 2,
    seed: int = 0,
    ctr: float = 0.05,
    mean_click_delay: float = 20.0,
    max_click_delay: float = 300.0,
    disorder: float = 2.0,
    start: datetime | str | None = None,
    impressions: str = "impressions",
    clicks: str = "clicks",
    flush_clicks: bool = True,
    live: bool = False,
    tick: float = 1.0,
) -> ClicklogResult:
    """Write ``rate`` impressions per second for ``duration`` seconds of event time.

    ``target`` is the workspace settings (topics go under ``<home>/topics/``) or a directory
    holding the two topics. ``start`` defaults to where the log ended, else 2025-01-01
    00:00 (or now, in live mode). With ``live``, one segment per partition is written every
    ``tick`` seconds of wall-clock time, with event time following the clock; otherwise
    everything is written at once, one segment per partition and topic.
    """
    import numpy as np

    if rate < 0 or duration <= 0 or partitions < 1 or users < 1 or items < 1:
        raise ConfigError("gen clicklog: rate ≥ 0, duration > 0, partitions, users and items "
                          "≥ 1 are required")
    if not 0 < ctr < 1:
        raise ConfigError(f"gen clicklog: ctr {ctr} must be between 0 and 1")
    if max_click_delay <= 0 or disorder < 0 or tick <= 0:
        raise ConfigError("gen clicklog: max_click_delay and tick > 0, disorder ≥ 0")
    folder = target.home / "topics" if isinstance(target, Settings) else Path(target)
    began = time.monotonic()
    imp_topic = _open_or_create(folder / impressions, IMPRESSION_COLUMNS, partitions)
    clk_topic = _open_or_create(folder / clicks, CLICK_COLUMNS, partitions)
    state = imp_topic.extra.get("clicklog", {})
    batch_no = int(state.get("batches", 0))
    first_id = int(state.get("next_imp_id", 0))
    if start is not None:
        start_ms = _to_ms(start)
    elif "next_start_ms" in state:
        start_ms = int(state["next_start_ms"])
    elif live:
        start_ms = int(time.time() * 1000)
    else:
        start_ms = _to_ms(DEFAULT_START)
    pending_file = clk_topic.path / PENDING
    pending: list[dict[str, Any]] = (
        json.loads(pending_file.read_text()) if pending_file.is_file() else []
    )
    model = _Model(np.random.default_rng(seed), users, items, ctr)
    rng = np.random.default_rng([seed, batch_no + 1])
    disorder_ms = int(disorder * 1000)
    total_ms = int(duration * 1000)
    step_ms = int(tick * 1000) if live else total_ms
    counts = {"impressions": 0, "clicks": 0, "segments": 0}
    wall0 = time.monotonic()

    def windows() -> Iterator[tuple[int, int]]:
        offset = 0
        while offset < total_ms:
            span = min(step_ms, total_ms - offset)
            yield start_ms + offset, span
            offset += span

    spans = list(windows())
    for index, (window_start, span) in enumerate(spans):
        if live:  # event time follows the wall clock
            due = wall0 + (window_start - start_ms + span) / 1000.0
            time.sleep(max(0.0, due - time.monotonic()))
        imps, new_clicks = _batch(
            rng, model, first_id=first_id, start_ms=window_start, span_ms=span, rate=rate,
            mean_click_delay=mean_click_delay, max_click_delay=max_click_delay,
        )
        first_id += len(imps)
        window_end = window_start + span
        pending.extend(new_clicks)
        if flush_clicks and index == len(spans) - 1:
            # The end of the log: every click now, in the same segment (one new segment per
            # partition and call keeps the files of a partition in event-time order).
            due_clicks, pending = pending, []
        else:
            due_clicks = [c for c in pending if c["ts"] < window_end]
            pending = [c for c in pending if c["ts"] >= window_end]
        counts["segments"] += _write(imp_topic, rng, imps, disorder_ms)
        counts["segments"] += _write(clk_topic, rng, due_clicks, disorder_ms)
        counts["impressions"] += len(imps)
        counts["clicks"] += len(due_clicks)
    end_ms = start_ms + total_ms
    if pending:
        pending_file.write_text(json.dumps(pending))
    elif pending_file.exists():
        pending_file.unlink()
    totals = dict(state.get("totals", {}))
    totals["impressions"] = int(totals.get("impressions", 0)) + counts["impressions"]
    totals["clicks"] = int(totals.get("clicks", 0)) + counts["clicks"]
    imp_topic.write_manifest(clicklog={
        "batches": batch_no + 1, "next_imp_id": first_id, "next_start_ms": end_ms,
        "seed": seed, "totals": totals,
    })
    result = ClicklogResult(
        impressions=imp_topic.path, clicks=clk_topic.path, partitions=partitions,
        impression_count=counts["impressions"], click_count=counts["clicks"],
        start=format_ts(start_ms), end=format_ts(end_ms), pending_clicks=len(pending),
        segments=counts["segments"], seconds=time.monotonic() - began,
    )
    log.info("%s in %.2f s", result, result.seconds)
    return result


def clicklog_nodes(partitions: int | None = None, watermark: str = "5 s",
                   impressions: str = "impressions", clicks: str = "clicks") -> list[Any]:
    """Topic resource nodes describing the generated topics (for a flow)."""
    from ultron_nb.flow.build import define_node

    body_i = ", ".join(f"{n} {t}" for n, t in IMPRESSION_COLUMNS)
    body_c = ", ".join(f"{n} {t}" for n, t in CLICK_COLUMNS)
    common: dict[str, Any] = {"kind": "topic", "time": "ts", "watermark": watermark}
    if partitions:
        common["partitions"] = partitions
    return [define_node(impressions, body_i, **common), define_node(clicks, body_c, **common)]
