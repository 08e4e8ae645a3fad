"""Generated click logs and ad requests: data for demos, tests and benchmarks.

``gen_clicklog`` writes two local topics (default ``<home>/topics/impressions`` and
``<home>/topics/clicks``) with the same number of partitions, keyed by user:

* impressions carry what a model can learn from: ``user_id``, ``item_id``, ``position``
  and two numeric context features, ``hour`` (of the day) and ``dwell`` (seconds on the
  previous page); users have skewed activity, items skewed popularity (the exploration
  log: items by popularity, positions 1-10 at random);
* clicks follow a hidden true model of those features (:mod:`ultron_nb.services.world`:
  user and item biases and latent factors, a position bias, the context effects), with a
  mean CTR of ``ctr``; so a trained model beats chance;
* click delays drawn from an exponential distribution, capped at ``max_click_delay``;
* bounded disorder: inside a partition an event is written at most ``disorder`` seconds out
  of event-time order (a watermark delay ≥ ``disorder`` loses nothing);
* one segment per partition and topic per call (or per ``tick`` in live mode), so the files
  of a partition are in order — what the Flink readers in
  :mod:`ultron_nb.engines.flink.ddl` rely on.

``gen_requests`` writes ad requests (``<home>/topics/requests``): a user, the context
features and ``candidates`` items to rank. A serving node
(:func:`ultron_nb.services.serving.serve`) ranks them with a model and the same hidden model
answers: a better model shows items with a higher click probability, so it raises the
realised CTR. Both topics record the World they come from in their manifest.

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
from ultron_nb.engines.topics import COMPLETE_THROUGH, LocalTopic
from ultron_nb.errors import ConfigError, DataError
from ultron_nb.services.world import World, WorldParams, hour_of, world_of

log = logging.getLogger(__name__)

IMPRESSION_COLUMNS: list[tuple[str, str]] = [
    ("imp_id", "BIGINT"), ("user_id", "BIGINT"), ("item_id", "BIGINT"),
    ("position", "INT"), ("hour", "INT"), ("dwell", "DOUBLE"), ("ts", "TIMESTAMP(3)"),
]
CLICK_COLUMNS: list[tuple[str, str]] = [
    ("imp_id", "BIGINT"), ("user_id", "BIGINT"), ("item_id", "BIGINT"),
    ("ts", "TIMESTAMP(3)"),
]
REQUEST_COLUMNS: list[tuple[str, str]] = [
    ("req_id", "BIGINT"), ("user_id", "BIGINT"), ("candidates", "STRING"),
    ("hour", "INT"), ("dwell", "DOUBLE"), ("ts", "TIMESTAMP(3)"),
]
DEFAULT_START = datetime(2025, 1, 1, 0, 0, 0)
PENDING = "_pending_clicks.json"
WORLD_KEY = "world"  # the manifest entry naming the World of a generated topic
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


@dataclass(repr=False)
class RequestsResult:
    """What one ``gen_requests`` call wrote."""

    requests: Path
    partitions: int
    count: int
    start: str
    end: str
    seconds: float = 0.0

    def __str__(self) -> str:
        return (f"requests: {self.count} ({self.partitions} partitions) from {self.start} "
                f"to {self.end} → {self.requests}")

    def __repr__(self) -> str:
        return str(self)


# ----------------------------------------------------------------------------- one batch
def _impressions(rng: Any, world: World, *, first_id: int, start_ms: int, span_ms: int,
                 rate: float, mean_click_delay: float, max_click_delay: float
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Impressions in [start, start + span) of the exploration log and all their clicks
    (any time)."""
    import numpy as np

    n = int(rng.poisson(rate * span_ms / 1000.0)) if rate > 0 else 0
    if n == 0:
        return [], []
    ts = start_ms + np.sort(rng.integers(0, span_ms, n))
    users = world.draw_users(rng, n)
    items = world.draw_items(rng, n)
    position = rng.integers(1, 11, n)
    hours = hour_of(ts)
    dwell = world.draw_dwell(rng, n)
    p_click = world.p_click(users, items, position, hours, dwell)
    clicked = rng.random(n) < p_click
    delays = np.minimum(rng.exponential(mean_click_delay, n), max_click_delay)
    delays_ms = np.maximum((delays * 1000).astype(np.int64), 200)
    imps = [
        {"imp_id": first_id + i, "user_id": int(users[i]), "item_id": int(items[i]),
         "position": int(position[i]), "hour": int(hours[i]), "dwell": float(dwell[i]),
         "ts": int(ts[i])}
        for i in range(n)
    ]
    clicks = [
        {"imp_id": first_id + int(i), "user_id": int(users[i]), "item_id": int(items[i]),
         "ts": int(ts[i] + delays_ms[i])}
        for i in np.flatnonzero(clicked)
    ]
    return imps, clicks


def _requests(rng: Any, world: World, *, first_id: int, start_ms: int, span_ms: int,
              rate: float, candidates: int) -> list[dict[str, Any]]:
    """Ad requests in [start, start + span): a user, the context, distinct candidates."""
    import numpy as np

    n = int(rng.poisson(rate * span_ms / 1000.0)) if rate > 0 else 0
    if n == 0:
        return []
    ts = start_ms + np.sort(rng.integers(0, span_ms, n))
    users = world.draw_users(rng, n)
    hours = hour_of(ts)
    dwell = world.draw_dwell(rng, n)
    k = min(candidates, world.params.items)
    drawn = world.draw_items(rng, (n, 3 * k))
    rows = []
    for i in range(n):
        picked = list(dict.fromkeys(int(x) for x in drawn[i]))[:k]
        if len(picked) < k:  # a few very popular items filled the draw: top up at random
            rest = [j for j in rng.permutation(world.params.items) if j not in picked]
            picked += [int(j) for j in rest[:k - len(picked)]]
        rows.append({"req_id": first_id + i, "user_id": int(users[i]),
                     "candidates": ",".join(map(str, picked)), "hour": int(hours[i]),
                     "dwell": float(dwell[i]), "ts": int(ts[i])})
    return rows


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


def _open_or_create(path: Path, columns: list[tuple[str, str]], partitions: int,
                    world: WorldParams | None = None) -> LocalTopic:
    """The topic at ``path``, created (naming its ``world`` from the start) if missing."""
    try:
        topic = LocalTopic.open(path)
    except DataError:
        extra = {WORLD_KEY: world.to_dict()} if world is not None else {}
        return LocalTopic(path, partitions, list(columns), "ts", extra).create()
    if topic.partitions != partitions:
        raise ConfigError(
            f"{path} already has {topic.partitions} partitions; generate with "
            f"--partitions {topic.partitions} or into another topic"
        )
    return topic


# ----------------------------------------------------------------------------- time
def _start_ms(start: datetime | str | None, state: dict[str, Any], live: bool) -> int:
    """Where a call starts: the given time, else where the log ended, else the default
    start (now, in live mode)."""
    if start is not None:
        return _to_ms(start)
    if "next_start_ms" in state:
        return int(state["next_start_ms"])
    return int(time.time() * 1000) if live else _to_ms(DEFAULT_START)


def _spans(start_ms: int, total_ms: int, *, live: bool, tick: float
           ) -> Iterator[tuple[int, int, bool]]:
    """``(window start, span, last)`` of a call; in live mode one per ``tick``, each
    yielded once the wall clock reaches the window's end (event time follows the clock)."""
    step_ms = int(tick * 1000) if live else total_ms
    wall0 = time.monotonic()
    offset = 0
    while offset < total_ms:
        span = min(step_ms, total_ms - offset)
        if live:
            due = wall0 + (offset + span) / 1000.0
            time.sleep(max(0.0, due - time.monotonic()))
        offset += span
        yield start_ms + offset - span, span, offset >= total_ms


def _check(rate: float, duration: float, partitions: int, users: int, items: int,
           ctr: float, tick: float, what: str = "gen clicklog") -> None:
    if rate < 0 or duration <= 0 or partitions < 1 or users < 1 or items < 1:
        raise ConfigError(f"{what}: rate ≥ 0, duration > 0, partitions, users and items "
                          "≥ 1 are required")
    if not 0 < ctr < 1:
        raise ConfigError(f"{what}: ctr {ctr} must be between 0 and 1")
    if tick <= 0:
        raise ConfigError(f"{what}: tick must be > 0")


def _folder(target: Settings | Path | str) -> Path:
    return target.home / "topics" if isinstance(target, Settings) else Path(target)


# ----------------------------------------------------------------------------- clicklog
@dataclass
class _Log:
    """A click log being continued: its topics, state and pending clicks."""

    imp_topic: LocalTopic
    clk_topic: LocalTopic
    state: dict[str, Any]
    pending: list[dict[str, Any]]

    @classmethod
    def open(cls, folder: Path, impressions: str, clicks: str, partitions: int,
             world: WorldParams) -> _Log:
        imp_topic = _open_or_create(folder / impressions, IMPRESSION_COLUMNS, partitions, world)
        clk_topic = _open_or_create(folder / clicks, CLICK_COLUMNS, partitions, world)
        pending_file = clk_topic.path / PENDING
        pending = json.loads(pending_file.read_text()) if pending_file.is_file() else []
        return cls(imp_topic, clk_topic, dict(imp_topic.extra.get("clicklog", {})), pending)

    def due(self, window_end: int, flush: bool) -> list[dict[str, Any]]:
        """Clicks to write with the impressions up to ``window_end`` (all with ``flush``:
        one new segment per partition and call keeps a partition in event-time order)."""
        if flush:
            due, self.pending = self.pending, []
            return due
        due = [c for c in self.pending if c["ts"] < window_end]
        self.pending = [c for c in self.pending if c["ts"] >= window_end]
        return due

    def save(self, *, batches: int, next_imp_id: int, end_ms: int, seed: int,
             counts: dict[str, int], world: WorldParams) -> None:
        pending_file = self.clk_topic.path / PENDING
        if self.pending:
            pending_file.write_text(json.dumps(self.pending))
        elif pending_file.exists():
            pending_file.unlink()
        totals = dict(self.state.get("totals", {}))
        for key in ("impressions", "clicks"):
            totals[key] = int(totals.get(key, 0)) + counts[key]
        self.imp_topic.write_manifest(clicklog={
            "batches": batches, "next_imp_id": next_imp_id, "next_start_ms": end_ms,
            "seed": seed, "totals": totals}, **{WORLD_KEY: world.to_dict()})
        self.clk_topic.write_manifest(**{WORLD_KEY: world.to_dict()})


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
    everything is written at once, one segment per partition and topic. The click model is
    the World of ``(seed, users, items, ctr)``.
    """
    import numpy as np

    _check(rate, duration, partitions, users, items, ctr, tick)
    if max_click_delay <= 0 or disorder < 0:
        raise ConfigError("gen clicklog: max_click_delay and tick > 0, disorder ≥ 0")
    began = time.monotonic()
    params = WorldParams(seed, users, items, ctr)
    clicklog = _Log.open(_folder(target), impressions, clicks, partitions, params)
    batch_no = int(clicklog.state.get("batches", 0))
    first_id = int(clicklog.state.get("next_imp_id", 0))
    start_ms = _start_ms(start, clicklog.state, live)
    world = world_of(params)
    rng = np.random.default_rng([seed, batch_no + 1])
    disorder_ms = int(disorder * 1000)
    counts = {"impressions": 0, "clicks": 0, "segments": 0}
    for window_start, span, last in _spans(start_ms, int(duration * 1000), live=live,
                                           tick=tick):
        imps, new_clicks = _impressions(
            rng, world, first_id=first_id, start_ms=window_start, span_ms=span, rate=rate,
            mean_click_delay=mean_click_delay, max_click_delay=max_click_delay)
        first_id += len(imps)
        clicklog.pending.extend(new_clicks)
        due_clicks = clicklog.due(window_start + span, flush_clicks and last)
        counts["segments"] += _write(clicklog.imp_topic, rng, imps, disorder_ms)
        counts["segments"] += _write(clicklog.clk_topic, rng, due_clicks, disorder_ms)
        counts["impressions"] += len(imps)
        counts["clicks"] += len(due_clicks)
    end_ms = start_ms + int(duration * 1000)
    clicklog.save(batches=batch_no + 1, next_imp_id=first_id, end_ms=end_ms, seed=seed,
                  counts=counts, world=params)
    result = ClicklogResult(
        impressions=clicklog.imp_topic.path, clicks=clicklog.clk_topic.path,
        partitions=partitions, impression_count=counts["impressions"],
        click_count=counts["clicks"], start=format_ts(start_ms), end=format_ts(end_ms),
        pending_clicks=len(clicklog.pending), segments=counts["segments"],
        seconds=time.monotonic() - began,
    )
    log.info("%s in %.2f s", result, result.seconds)
    return result


# ----------------------------------------------------------------------------- requests
def gen_requests(
    target: Settings | Path | str,
    *,
    rate: float = 10.0,
    duration: float = 60.0,
    candidates: int = 8,
    users: int = 1000,
    items: int = 200,
    partitions: int = 2,
    seed: int = 0,
    ctr: float = 0.05,
    disorder: float = 2.0,
    start: datetime | str | None = None,
    topic: str = "requests",
    live: bool = False,
    tick: float = 1.0,
) -> RequestsResult:
    """Write ``rate`` ad requests per second for ``duration`` seconds of event time, each
    with ``candidates`` distinct items for a model to rank, into local topic ``topic``
    (keyed by user). The World of ``(seed, users, items, ctr)`` — the same as a click log's
    with those arguments — is recorded in the topic's manifest: a serving node answers the
    requests with it. Calls continue the topic, as :func:`gen_clicklog` does."""
    import numpy as np

    _check(rate, duration, partitions, users, items, ctr, tick, "gen requests")
    if candidates < 1 or disorder < 0:
        raise ConfigError("gen requests: candidates ≥ 1 and disorder ≥ 0 are required")
    began = time.monotonic()
    params = WorldParams(seed, users, items, ctr)
    out = _open_or_create(_folder(target) / topic, REQUEST_COLUMNS, partitions, params)
    state = dict(out.extra.get("requests", {}))
    recorded = out.extra.get(WORLD_KEY)
    if recorded and WorldParams.from_dict(recorded) != params:
        raise ConfigError(f"{out.path} holds requests of another world ({recorded}); "
                          "generate with the same --seed/--users/--items/--ctr or into "
                          "another topic")
    world = world_of(params)
    batch_no = int(state.get("batches", 0))
    first_id = int(state.get("next_req_id", 0))
    start_ms = _start_ms(start, state, live)
    rng = np.random.default_rng([seed, 1_000_003, batch_no + 1])
    count = 0
    for window_start, span, _last in _spans(start_ms, int(duration * 1000), live=live,
                                            tick=tick):
        rows = _requests(rng, world, first_id=first_id, start_ms=window_start, span_ms=span,
                         rate=rate, candidates=candidates)
        first_id += len(rows)
        count += len(rows)
        _write(out, rng, rows, int(disorder * 1000))
        if live:  # each tick's segments are all written: readers may pass them
            out.write_manifest(**{COMPLETE_THROUGH: window_start + span})
    end_ms = start_ms + int(duration * 1000)
    out.write_manifest(requests={"batches": batch_no + 1, "next_req_id": first_id,
                                 "next_start_ms": end_ms,
                                 "total": int(state.get("total", 0)) + count},
                       **{WORLD_KEY: params.to_dict(), COMPLETE_THROUGH: end_ms})
    result = RequestsResult(out.path, partitions, count, format_ts(start_ms), format_ts(end_ms),
                            time.monotonic() - began)
    log.info("%s in %.2f s", result, result.seconds)
    return result


def world_of_topic(path: Path) -> World:
    """The World that generated local topic ``path`` (from its manifest)."""
    topic = LocalTopic.open(path)
    recorded = topic.extra.get(WORLD_KEY)
    if not recorded:
        raise DataError(f"{path}: the topic records no generating world (write it with "
                        "gen_requests or gen_clicklog)")
    return world_of(WorldParams.from_dict(recorded))


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


def requests_node(name: str = "requests", partitions: int | None = None,
                  watermark: str = "5 s") -> Any:
    """The topic resource node describing generated requests (for a flow)."""
    from ultron_nb.flow.build import define_node

    body = ", ".join(f"{n} {t}" for n, t in REQUEST_COLUMNS)
    extra: dict[str, Any] = {"partitions": partitions} if partitions else {}
    return define_node(name, body, kind="topic", time="ts", watermark=watermark, **extra)
