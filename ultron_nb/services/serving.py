"""Online serving: score a stream of ad requests with the champion, reload when it moves.

A Python node with no start edge starts with its experiment and runs until it is stopped::

    def serve(ctx):
        from ultron_nb.services.serving import serve
        serve(ctx, name="ctr_model", requests="requests")

:func:`serve` follows the ``requests`` topic (:func:`ultron_nb.services.datagen.gen_requests`)
and, for each batch of new requests, resolves ``models:/NAME@champion`` as this
experiment sees it (its own ``champion--<clone>``, else its parent's), loads the version when
it changed, ranks each request's candidates by predicted click probability and shows the
best ``slate`` at positions 1, 2, ... Each served impression carries the **model version**
that chose it (0: no champion yet, candidates in a fixed random order), the time the alias
was read (``served_at``, epoch ms), and the experiment's **label**: the data itself is
labelled with the experiment. Requests are split between experiments by a stable hash of
the user (the node's ``traffic`` parameter, percent buckets ``LO-HI``, default ``0-100``).

The users answer from the World that generated the requests (its hidden click model, with
random numbers fixed per request and item, so the same impression clicks the same way in
every experiment): the better the model, the higher the click probability of what it
shows. The node writes two local topics under its output: ``served`` and ``clicks``
(click event time = impression time + the user's delay). Its position (segments read per
request partition) is saved after each batch, so a restarted node continues.

Why a Python node and not a Flink job with a Python UDF: the node must reload the model
when the alias moves and answer each impression from the World, state that is plain
Python in one long-lived process (a Flink UDF holds one model per task and learns of
an alias move only by polling the registry itself).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ultron_nb.engines.topics import LocalTopic, TopicTail, complete_through
from ultron_nb.errors import ConfigError, NotFoundError
from ultron_nb.services.datagen import format_ts, parse_ts, world_of_topic

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SERVED_COLUMNS: list[tuple[str, str]] = [
    ("imp_id", "BIGINT"), ("req_id", "BIGINT"), ("user_id", "BIGINT"), ("item_id", "BIGINT"),
    ("position", "INT"), ("hour", "INT"), ("dwell", "DOUBLE"), ("ts", "TIMESTAMP(3)"),
    ("score", "DOUBLE"), ("model_version", "INT"), ("label", "STRING"),
    ("experiment", "STRING"), ("served_at", "BIGINT"),
]
SERVED_CLICK_COLUMNS: list[tuple[str, str]] = [
    ("imp_id", "BIGINT"), ("label", "STRING"), ("ts", "TIMESTAMP(3)"),
]
STATE = "_serve_state.json"
SERVED, CLICKS = "served", "clicks"
NO_MODEL = 0


def parse_traffic(text: str) -> tuple[int, int]:
    """``"0-50"`` → ``(0, 50)``: the percent buckets an experiment serves."""
    lo, sep, hi = str(text).partition("-")
    try:
        bounds = (int(lo), int(hi)) if sep else (0, 0)
    except ValueError:
        bounds = (0, 0)
    if not 0 <= bounds[0] < bounds[1] <= 100:
        raise ConfigError(f"traffic {text!r}: percent buckets LO-HI with 0 ≤ LO < HI ≤ 100 "
                          "(e.g. 0-50)")
    return bounds


def experiment_label(ctx: Any) -> str:
    """The label of the node's experiment (its name when it has none)."""
    from ultron_nb.store import experiments as repo
    from ultron_nb.store import open_database

    if not ctx.db_url:
        return str(ctx.experiment)
    with open_database(ctx.db_url).read() as conn:
        try:
            return repo.get_experiment(conn, ctx.experiment).label or str(ctx.experiment)
        except NotFoundError:
            return str(ctx.experiment)


@dataclass
class Outputs:
    """The topics a serving node writes, and its saved position."""

    root: Path
    served: LocalTopic = field(init=False)
    clicks: LocalTopic = field(init=False)

    def __post_init__(self) -> None:
        self.served = _topic(self.root / SERVED, SERVED_COLUMNS)
        self.clicks = _topic(self.root / CLICKS, SERVED_CLICK_COLUMNS)

    def load(self) -> dict[str, Any]:
        path = self.root / STATE
        return json.loads(path.read_text()) if path.is_file() else {}

    def save(self, state: dict[str, Any]) -> None:
        tmp = self.root / f".{STATE}.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.root / STATE)


def _topic(path: Path, columns: list[tuple[str, str]]) -> LocalTopic:
    if (path / "_topic.json").is_file():
        return LocalTopic.open(path)
    return LocalTopic(path, 1, list(columns), "ts").create()


class Champion:
    """The model that serves: the alias as the experiment resolves it, reloaded on a move."""

    def __init__(self, ctx: Any, name: str, alias: str):
        self.center = ctx.models
        self.name = name
        self.alias = alias
        self.version = NO_MODEL
        self.model: Any = None
        self.switches = 0

    def refresh(self) -> tuple[int, int]:
        """Read the alias now; load its version if it moved. ``(version, read at ms)``."""
        try:
            version, _ = self.center.resolve(self.name, self.alias)
        except NotFoundError:
            version = NO_MODEL
        read_at = int(time.time() * 1000)
        if version != self.version:
            self.model = self.center.load(self.name, version=version, native=True) \
                if version != NO_MODEL else None
            log.info("serving %s version %d (was %d)", self.name, version, self.version)
            self.version = version
            self.switches += 1
        return self.version, read_at


def rank(requests: pd.DataFrame, model: Any, *, slate: int, seed: int) -> pd.DataFrame:
    """One row per shown impression: each request's best ``slate`` candidates (by the
    model's click probability; in a fixed random order with no model), positions 1..slate."""
    import numpy as np

    from ultron_nb.services.learning import click_probability
    from ultron_nb.services.world import key_of, uniform

    cands = requests.assign(item_id=requests["candidates"].str.split(",")).explode("item_id")
    cands["item_id"] = cands["item_id"].astype("int64")
    cands["position"] = 1  # scored as if shown on top: the model ranks, the slot is given
    if model is None:
        cands["score"] = uniform(seed, 0xA11, key_of(cands["req_id"], cands["item_id"]))
    else:
        cands["score"] = click_probability(model, cands)
    cands = cands.sort_values(["req_id", "score"], ascending=[True, False], kind="stable")
    cands["position"] = cands.groupby("req_id").cumcount() + 1
    shown = cands[cands["position"] <= slate].copy()
    shown["imp_id"] = shown["req_id"].astype("int64") * slate + shown["position"] - 1
    if model is None:
        shown["score"] = np.nan
    return shown


def _answer(shown: pd.DataFrame, world: Any, label: str) -> list[dict[str, Any]]:
    from ultron_nb.services.world import key_of

    clicked, delays = world.respond(key_of(shown["req_id"], shown["item_id"]),
                                    shown["user_id"], shown["item_id"], shown["position"],
                                    shown["hour"], shown["dwell"])
    ts = shown["ts_ms"].to_numpy()
    ids = shown["imp_id"].to_numpy()
    return [{"imp_id": int(ids[i]), "label": label, "ts": format_ts(int(ts[i] + delays[i]))}
            for i in clicked.nonzero()[0]]


@dataclass
class Server:
    """One serving node's loop state (see :func:`serve`)."""

    ctx: Any
    name: str
    requests: str
    alias: str
    traffic: tuple[int, int]
    slate: int
    outputs: Outputs
    champion: Champion
    label: str
    world: Any
    tail: TopicTail
    served: int = 0
    batches: int = 0
    highs: dict[int, int] = field(default_factory=dict)  # request partition → latest ts
    held: list[dict[str, Any]] = field(default_factory=list)
    idle: float = 1.0
    last_new: float = field(default_factory=time.monotonic)

    def take(self, limit: int) -> list[dict[str, Any]]:
        """New requests in event-time order: those before the topic's watermark — the
        latest event time every partition has reached, or the writer's ``complete_through``
        mark (read before polling) once every segment there is has been read; the rest are
        held until it passes them. Without a writer's mark, once every partition has been
        seen, everything is read and no new segment came for ``idle`` seconds, everything
        held is released (a partition gone quiet)."""
        through = complete_through(self.tail.path)
        parts = self.tail.poll_partitions(limit)
        now = time.monotonic()
        if parts:
            self.last_new = now
        for k, rows in parts.items():
            for r in rows:
                r["ts_ms"] = parse_ts(r["ts"])
            self.highs[k] = max(self.highs.get(k, rows[0]["ts_ms"]),
                                max(r["ts_ms"] for r in rows))
            self.held.extend(rows)
        topic = self.tail.topic
        if not self.held or topic is None:
            return []
        seen_all = len(self.highs) >= topic.partitions
        caught_up = self.tail.caught_up()
        if through is None and seen_all and caught_up and not parts \
                and now - self.last_new >= self.idle:
            ready, self.held = self.held, []
        else:
            mark = min(self.highs.values()) + 1 if seen_all else None
            if through is not None and caught_up:
                mark = through if mark is None else max(mark, through)
            if mark is None:
                return []
            ready = [r for r in self.held if r["ts_ms"] < mark]
            self.held = [r for r in self.held if r["ts_ms"] >= mark]
        return sorted(ready, key=lambda r: (r["ts_ms"], r["req_id"]))

    def step(self, limit: int) -> int:
        """Serve the requests that are due; how many (in this experiment's traffic)."""
        import pandas as pd

        from ultron_nb.services.world import bucket_of

        if self.world is None:
            topic = self.tail.topic
            if topic is None or not any(topic.segments(k) for k in range(topic.partitions)):
                return 0  # no request written yet
            self.world = world_of_topic(self.tail.path)
        rows = self.take(limit)
        if not rows:
            return 0  # the position is saved with the next served batch
        frame = pd.DataFrame(rows)
        lo, hi = self.traffic
        buckets = bucket_of(frame["user_id"])
        frame = frame[(buckets >= lo) & (buckets < hi)]
        if len(frame):
            version, read_at = self.champion.refresh()
            shown = rank(frame, self.champion.model, slate=self.slate,
                         seed=self.world.params.seed)
            shown = shown.sort_values(["ts_ms", "imp_id"], kind="stable")
            self.outputs.served.append(0, self._records(shown, version, read_at))
            self.outputs.clicks.append(0, sorted(_answer(shown, self.world, self.label),
                                                 key=lambda c: c["ts"]))
            self.served += len(shown)
        self.batches += 1
        self._save()
        return max(len(frame), 1)

    def _save(self) -> None:
        self.outputs.save({"offsets": self.tail.offsets, "served": self.served,
                           "batches": self.batches, "highs": self.highs,
                           "held": self.held})

    def _records(self, shown: pd.DataFrame, version: int, read_at: int
                 ) -> list[dict[str, Any]]:
        import math

        out = []
        for r in shown.itertuples(index=False):
            out.append({"imp_id": int(r.imp_id), "req_id": int(r.req_id),
                        "user_id": int(r.user_id), "item_id": int(r.item_id),
                        "position": int(r.position), "hour": int(r.hour),
                        "dwell": float(r.dwell), "ts": format_ts(int(r.ts_ms)),
                        "score": None if math.isnan(r.score) else round(float(r.score), 6),
                        "model_version": version, "label": self.label,
                        "experiment": self.ctx.experiment, "served_at": read_at})
        return out


def open_server(ctx: Any, name: str, *, requests: str = "requests", alias: str = "champion",
                traffic: str | None = None, slate: int = 1) -> Server:
    """The serving loop of node run ``ctx``, positioned where its last run stopped."""
    if requests not in ctx.input_paths:
        raise ConfigError(f"node {ctx.node!r}: serve reads {requests!r}, which is not one of "
                          f"its inputs (give --inputs {requests})")
    if slate < 1:
        raise ConfigError(f"node {ctx.node!r}: slate must be ≥ 1")
    source = Path(ctx.input_paths[requests])
    outputs = Outputs(ctx.output_path)
    state = outputs.load()
    server = Server(ctx, name, requests, alias,
                    parse_traffic(traffic or ctx.params.get("traffic", "0-100")), int(slate),
                    outputs, Champion(ctx, name, alias), experiment_label(ctx),
                    None, TopicTail(source, {int(k): v for k, v in
                                             state.get("offsets", {}).items()}),
                    int(state.get("served", 0)), int(state.get("batches", 0)),
                    {int(k): int(v) for k, v in state.get("highs", {}).items()},
                    list(state.get("held", [])))
    return server


@contextlib.contextmanager
def graceful_stop() -> Iterator[list[int]]:
    """While inside, SIGTERM only asks to stop (the list gets the signal); on leaving, a
    requested stop is delivered again to the previous handler, so a node process stopped
    this way still ends *stopped* (by the signal), after its loop finished its batch."""
    stop: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signo, _frame: stop.append(signo))
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
        if stop:
            signal.raise_signal(signal.SIGTERM)


def serve(ctx: Any, name: str = "ctr_model", *, requests: str = "requests",
          alias: str = "champion", traffic: str | None = None, slate: int = 1,
          poll: float = 0.25, batch: int = 20_000, until: Any = None) -> dict[str, int]:
    """Serve until stopped (SIGTERM) — or until ``until()`` is true — (see the module
    docstring); what was served."""
    server = open_server(ctx, name, requests=requests, alias=alias, traffic=traffic,
                         slate=slate)
    summary: dict[str, int] = {}
    with graceful_stop() as stop:
        while not stop and not (until is not None and until()):
            if not server.step(batch):
                time.sleep(poll)
        summary = {"served": server.served, "batches": server.batches,
                   "switches": server.champion.switches}
        log.info("serve %s stopped: %s", name, summary)
    return summary


__all__ = ["SERVED_CLICK_COLUMNS", "SERVED_COLUMNS", "Champion", "Server", "graceful_stop",
           "open_server", "parse_traffic", "rank", "serve"]
