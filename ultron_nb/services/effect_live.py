"""CTR per experiment label per window, live: a stream node over a serving node's output.

A Python node that starts with its experiment and runs until stopped::

    def ctr_live(ctx):
        from ultron_nb.services.effect_live import live_ctr
        live_ctr(ctx, input="serve", window="1m")

follows the ``served`` and ``clicks`` topics the serving node writes, counts impressions
and clicks (a click within ``label_window`` of its impression) per label and event-time
window, and *closes* a window once the label's served event time has passed its end plus
the label window. Each closed window becomes a row of the node's output topic ``ctr``
(label, experiment, window, impressions, clicks, CTR and its Wilson interval) and the
windows closed together one event ``effect/<experiment>/ctr``. The same rule as
:func:`ultron_nb.services.effect.effect`, so both count the same. A restarted node reads
the serving output again and skips the windows it has already written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ultron_nb.engines.topics import LocalTopic, TopicTail
from ultron_nb.errors import ConfigError
from ultron_nb.services.datagen import format_ts, parse_ts
from ultron_nb.services.serving import graceful_stop

log = logging.getLogger(__name__)

CTR_COLUMNS: list[tuple[str, str]] = [
    ("label", "STRING"), ("experiment", "STRING"), ("window_start", "TIMESTAMP(3)"),
    ("window_end", "TIMESTAMP(3)"), ("impressions", "BIGINT"), ("clicks", "BIGINT"),
    ("ctr", "DOUBLE"), ("ci_low", "DOUBLE"), ("ci_high", "DOUBLE"),
]


@dataclass
class LiveCtr:
    """The counting state of one live CTR node."""

    window_ms: int
    label_window_ms: int
    out: LocalTopic
    emitted: set[tuple[str, int]] = field(default_factory=set)
    counts: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    experiments: dict[str, str] = field(default_factory=dict)  # label → experiment
    open_imps: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    early_clicks: dict[int, int] = field(default_factory=dict)  # before their impression
    high: dict[str, int] = field(default_factory=dict)  # label → latest served event time

    def add_served(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            label, ts = str(r["label"]), parse_ts(r["ts"])
            start = ts // self.window_ms * self.window_ms
            self.high[label] = max(self.high.get(label, ts), ts)
            self.experiments.setdefault(label, str(r.get("experiment", "")))
            if (label, start) in self.emitted:
                continue
            count = self.counts.setdefault((label, start), [0, 0])
            count[0] += 1
            imp = int(r["imp_id"])
            self.open_imps[imp] = (label, start, ts)
            click = self.early_clicks.pop(imp, None)
            if click is not None:
                self._click(imp, click)

    def add_clicks(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            imp, ts = int(r["imp_id"]), parse_ts(r["ts"])
            if imp in self.open_imps:
                self._click(imp, ts)
            else:
                self.early_clicks[imp] = min(ts, self.early_clicks.get(imp, ts))

    def _click(self, imp: int, ts: int) -> None:
        label, start, imp_ts = self.open_imps[imp]
        if 0 <= ts - imp_ts <= self.label_window_ms:
            self.counts[(label, start)][1] += 1
            self.open_imps[imp] = (label, start, -(10**15))  # counted: a later click is not

    def close(self) -> list[dict[str, Any]]:
        """Write the windows that are complete; their rows."""
        from ultron_nb.services.stats import wilson

        done = sorted(k for k in self.counts
                      if k[1] + self.window_ms + self.label_window_ms <= self.high.get(k[0], 0))
        rows = []
        for label, start in done:
            imps, clicks = self.counts.pop((label, start))
            est = wilson(clicks, imps)
            rows.append({"label": label, "experiment": self.experiments.get(label, ""),
                         "window_start": format_ts(start),
                         "window_end": format_ts(start + self.window_ms),
                         "impressions": imps, "clicks": clicks, "ctr": est.value,
                         "ci_low": est.low, "ci_high": est.high})
            self.emitted.add((label, start))
        if rows:
            closed = {(r["label"], parse_ts(r["window_start"])) for r in rows}
            self.open_imps = {i: v for i, v in self.open_imps.items()
                              if (v[0], v[1]) not in closed}
            self.out.append(0, rows)
        return rows


def open_live(ctx: Any, *, window: str = "1m", label_window: str = "10m",
              out: Path | None = None) -> LiveCtr:
    from ultron_nb.flow.edges import parse_interval

    sizes = [parse_interval(window), parse_interval(label_window)]
    if not all(sizes):
        raise ConfigError(f"node {ctx.node!r}: window {window!r} and label_window "
                          f"{label_window!r} must be intervals (1m, 10m)")
    path = out or ctx.output_path / "ctr"
    topic = LocalTopic.open(path) if (path / "_topic.json").is_file() else \
        LocalTopic(path, 1, list(CTR_COLUMNS), "window_start").create()
    emitted = {(str(r["label"]), parse_ts(r["window_start"])) for r in topic.read()}
    return LiveCtr(int(sizes[0] * 1000), int(sizes[1] * 1000), topic, emitted)  # type: ignore[operator]


def live_ctr(ctx: Any, *, input: str = "serve", window: str = "1m",
             label_window: str = "10m", poll: float = 0.5, until: Any = None) -> int:
    """Count until stopped (SIGTERM) or ``until()``; the windows written by this run."""
    if input not in ctx.input_paths:
        raise ConfigError(f"node {ctx.node!r}: live_ctr reads {input!r}, which is not one of "
                          f"its inputs (give --inputs {input})")
    source = Path(ctx.input_paths[input])
    state = open_live(ctx, window=window, label_window=label_window)
    served, clicks = TopicTail(source / "served"), TopicTail(source / "clicks")
    written = 0
    with graceful_stop() as stop:
        while not stop and not (until is not None and until()):
            new_served, new_clicks = served.poll(), clicks.poll()
            state.add_served(new_served)
            state.add_clicks(new_clicks)
            rows = state.close()
            if rows:
                written += len(rows)
                ctx.send_event(f"effect/{ctx.experiment}/ctr", {"windows": rows})
            if not new_served and not new_clicks:
                time.sleep(poll)
        log.info("live_ctr wrote %d windows", written)
    return written


__all__ = ["CTR_COLUMNS", "LiveCtr", "live_ctr", "open_live"]
