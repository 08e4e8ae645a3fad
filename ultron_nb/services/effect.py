"""Real-time effect evaluation: a metric per experiment label per event-time window.

Every impression a serving node (:mod:`ultron_nb.services.serving`) shows carries the
experiment's label and the model version that chose it; the users' clicks come back on a
topic of their own. :func:`effect` reads both for each experiment, labels an impression
clicked when a click arrives within ``label_window`` of it, and computes per label and
window (``window`` of event time):

- ``ctr``: clicks / impressions with the **Wilson** score interval; the difference to the
  baseline (the first experiment) with **Newcombe**'s hybrid score interval;
- ``auc`` of the served scores against the clicks with the **DeLong** interval, the
  difference of two labels' AUCs with the sum of their DeLong variances (independent
  traffic);
- ``logloss`` of the served scores with a normal interval from its standard error.

Impressions served with no model (version 0) have no score: they count for CTR only. A
window counts once it is *complete*: the label's served event time has passed its end plus
the label window (every click it can get has had the time to come); ``include_open`` keeps
the others. :class:`EffectReport` shows the table and a plot (SVG, matplotlib: it renders
in JupyterLab and survives nbconvert).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ultron_nb.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    import pandas as pd

    from ultron_nb.workspace import Workspace

METRICS = ("ctr", "auc", "logloss")
FRAME_COLUMNS = ["label", "experiment", "window_start", "window_end", "impressions", "clicks",
                 "metric", "value", "ci_low", "ci_high", "versions"]
DIFF_COLUMNS = ["label", "baseline", "window_start", "window_end", "metric", "diff",
                "ci_low", "ci_high"]


def _ms(text: str, what: str) -> int:
    from ultron_nb.flow.edges import parse_interval

    seconds = parse_interval(text)
    if not seconds:
        raise ConfigError(f"effect: {what} {text!r} is no interval (e.g. 1m, 10m, 1h)")
    return int(seconds * 1000)


# ----------------------------------------------------------------------------- data
def serve_outputs(ws: Workspace, experiment: str, node: str | None = None) -> Path:
    """The output folder of ``experiment``'s serving node (the one given, or the one whose
    output holds a ``served`` topic)."""
    from ultron_nb.store import experiments as repo

    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, experiment)
        views = repo.node_views(conn, exp.id)
    found = []
    for view in views:
        path = (view.instance.output or {}).get("path")
        if node is not None and view.member.node_name != node:
            continue
        if path and (node is not None or (Path(path) / "served" / "_topic.json").is_file()):
            found.append((view.member.node_name, Path(path)))
    if node is not None and not found:
        raise NotFoundError(f"experiment {experiment!r} has no node {node!r} with an output")
    if not found:
        raise NotFoundError(f"experiment {experiment!r} has served nothing yet (no node "
                            "output holds a 'served' topic; name the node with --node)")
    if len(found) > 1:
        names = ", ".join(n for n, _ in found)
        raise ConfigError(f"experiment {experiment!r} serves from several nodes ({names}): "
                          "name one with --node")
    return found[0][1]


def _read_topic(folder: Path, columns: dict[str, str]) -> pd.DataFrame:
    """Every record of a local topic's segments (DuckDB), typed by ``columns``; the
    timestamps as epoch ms."""
    import duckdb
    import pandas as pd

    files = sorted(str(p) for p in folder.glob("p*/seg-*.jsonl"))
    if not files:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "ts" else "object")
                             for c in columns})
    con = duckdb.connect()
    try:
        picked = ", ".join(f"epoch_ms({c}) AS {c}" if t == "TIMESTAMP" else c
                           for c, t in columns.items())
        return con.execute(f"SELECT {picked} FROM read_json(?, format = "
                           "'newline_delimited', columns = ?)", [files, columns]).df()
    finally:
        con.close()


def served_rows(folder: Path, label_window_ms: int) -> pd.DataFrame:
    """Served impressions of one serving output, with ``ts_ms`` and ``clicked`` (a click
    within ``label_window_ms`` after the impression)."""
    served = _read_topic(folder / "served", {
        "imp_id": "BIGINT", "ts": "TIMESTAMP", "score": "DOUBLE", "model_version": "INTEGER",
        "label": "VARCHAR", "experiment": "VARCHAR"})
    if not len(served):
        raise NotFoundError(f"{folder / 'served'}: nothing served yet")
    clicks = _read_topic(folder / "clicks", {"imp_id": "BIGINT", "ts": "TIMESTAMP"})
    first = clicks.groupby("imp_id")["ts"].min().rename("click_ts")
    rows = served.rename(columns={"ts": "ts_ms"}).join(first, on="imp_id")
    delay = rows["click_ts"] - rows["ts_ms"]
    rows["clicked"] = (rows["click_ts"].notna() & (delay >= 0)
                       & (delay <= label_window_ms)).astype(int)
    return rows.drop(columns=["click_ts"])


# ----------------------------------------------------------------------------- metrics
def _window_metric(metric: str, rows: pd.DataFrame) -> tuple[float, float, float, float]:
    """``(value, low, high, variance)`` of one group (variance NaN for CTR)."""
    from ultron_nb.services import stats

    if metric == "ctr":
        est = stats.wilson(int(rows["clicked"].sum()), len(rows))
        return est.value, est.low, est.high, math.nan
    scored = rows[rows["score"].notna()]
    if metric == "auc":
        auc, var = stats.delong(scored["clicked"], scored["score"])
        est = stats.auc_interval(scored["clicked"], scored["score"])
        return auc, est.low, est.high, var
    est, var = stats.logloss_interval(scored["clicked"], scored["score"])
    return est.value, est.low, est.high, var


def window_frame(rows: pd.DataFrame, metric: str, window_ms: int, label_window_ms: int,
                 *, include_open: bool = False) -> pd.DataFrame:
    """Per label and window: counts, the metric, its interval, the versions that served."""
    import pandas as pd

    rows = rows.assign(window=(rows["ts_ms"] // window_ms) * window_ms)
    high = rows.groupby("label")["ts_ms"].max()
    out = []
    for (label, start), group in rows.groupby(["label", "window"], sort=True):
        end = int(start) + window_ms
        if not include_open and end + label_window_ms > int(high[label]):
            continue
        value, low, hi, var = _window_metric(metric, group)
        versions = ",".join(str(v) for v in sorted(group["model_version"].unique()))
        out.append({"label": label, "experiment": ",".join(sorted(group["experiment"].unique())),
                    "window_start": pd.Timestamp(int(start), unit="ms"),
                    "window_end": pd.Timestamp(end, unit="ms"), "impressions": len(group),
                    "clicks": int(group["clicked"].sum()), "metric": metric, "value": value,
                    "ci_low": low, "ci_high": hi, "versions": versions, "variance": var})
    return pd.DataFrame(out, columns=[*FRAME_COLUMNS, "variance"])


def _diff_row(metric: str, a: Any, b: Any) -> tuple[float, float, float]:
    from ultron_nb.services import stats

    if metric == "ctr":
        est = stats.newcombe(int(a.clicks), int(a.impressions), int(b.clicks),
                             int(b.impressions))
    else:
        est = stats.difference(a.value, a.variance, b.value, b.variance)
    return est.value, est.low, est.high


def diff_frame(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each label minus ``baseline``, window by window (windows both have)."""
    import pandas as pd

    base = {r.window_start: r for r in frame[frame["label"] == baseline].itertuples()}
    out = []
    for r in frame[frame["label"] != baseline].itertuples():
        b = base.get(r.window_start)
        if b is None:
            continue
        d, low, high = _diff_row(r.metric, r, b)
        out.append({"label": r.label, "baseline": baseline, "window_start": r.window_start,
                    "window_end": r.window_end, "metric": r.metric, "diff": d,
                    "ci_low": low, "ci_high": high})
    return pd.DataFrame(out, columns=DIFF_COLUMNS)


def summary_frame(rows: pd.DataFrame, frame: pd.DataFrame, metric: str,
                  baseline: str) -> pd.DataFrame:
    """The metric per label over every counted window, and its difference to the baseline."""
    import pandas as pd

    counted = set(zip(frame["label"], frame["window_start"], strict=True))
    window_ms = (frame["window_end"] - frame["window_start"]).iloc[0] if len(frame) else None
    out = []
    per: dict[str, Any] = {}
    for label, group in rows.groupby("label", sort=False):
        if window_ms is not None:
            starts = pd.to_datetime((group["ts_ms"] // (window_ms.value // 1_000_000))
                                    * (window_ms.value // 1_000_000), unit="ms")
            group = group[[(label, s) in counted for s in starts]]
        if not len(group):
            continue
        value, low, high, var = _window_metric(metric, group)
        per[label] = row = {"label": label, "impressions": len(group),
                            "clicks": int(group["clicked"].sum()), "metric": metric,
                            "value": value, "ci_low": low, "ci_high": high, "variance": var}
        out.append(row)
    summary = pd.DataFrame(out)
    if baseline in per and len(per) > 1:
        b = per[baseline]
        diffs = []
        for row in out:
            if row["label"] == baseline:
                diffs.append((math.nan, math.nan, math.nan))
                continue
            diffs.append(_diff_row(metric, pd.Series(row), pd.Series(b)))
        summary["diff"], summary["diff_low"], summary["diff_high"] = zip(*diffs, strict=True)
    return summary.drop(columns=["variance"], errors="ignore")


# ----------------------------------------------------------------------------- the report
@dataclass
class EffectReport:
    """The effect of experiments: ``frame`` (per label and window), ``diff`` (each label
    minus the baseline's), ``summary`` (over every counted window)."""

    experiments: list[str]
    metric: str
    window: str
    label_window: str
    baseline: str
    frame: pd.DataFrame
    diff: pd.DataFrame
    summary: pd.DataFrame

    def svg(self) -> str:
        from ultron_nb.services.effect_plot import plot_svg

        return plot_svg(self)

    @property
    def title(self) -> str:
        return (f"{self.metric} per label per {self.window} window ({', '.join(self.experiments)}"
                f"; clicks within {self.label_window})")

    def __str__(self) -> str:
        lines = [self.title]
        for r in self.summary.itertuples():
            text = (f"  {r.label}: {r.value:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}] "
                    f"({r.impressions} impressions, {r.clicks} clicks)")
            d = getattr(r, "diff", math.nan)
            if isinstance(d, float) and not math.isnan(d):
                text += (f"; vs {self.baseline} {d:+.4f} [{r.diff_low:+.4f}, "
                         f"{r.diff_high:+.4f}]")
            lines.append(text)
        lines.append(f"  {len(self.frame)} label-windows; .frame, .diff, .summary hold them")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        svg = self.svg()
        table = self.summary.to_html(index=False, float_format=lambda x: f"{x:.4f}")
        body = (f"<p><b>{html.escape(self.title)}</b></p>{svg}{table}"
                f"<p>{len(self.frame)} label-windows (<code>.frame</code>), differences "
                f"to {html.escape(self.baseline)} in <code>.diff</code></p>")
        return {"text/plain": str(self), "text/html": body, "image/svg+xml": svg}


def effect(ws: Workspace, experiments: list[str], *, metric: str = "ctr", window: str = "1m",
           label_window: str = "10m", node: str | None = None,
           include_open: bool = False) -> EffectReport:
    """The effect report of ``experiments`` (the first is the baseline); see the module
    docstring."""
    import pandas as pd

    if metric not in METRICS:
        raise ConfigError(f"effect: --metric {metric!r}: one of {', '.join(METRICS)}")
    if not experiments:
        raise ConfigError("effect: name at least one experiment")
    window_ms, label_ms = _ms(window, "--window"), _ms(label_window, "--label-window")
    rows = pd.concat([served_rows(serve_outputs(ws, exp, node), label_ms)
                      for exp in dict.fromkeys(experiments)], ignore_index=True)
    labels = list(dict.fromkeys(rows["label"]))
    baseline = labels[0]
    frame = window_frame(rows, metric, window_ms, label_ms, include_open=include_open)
    diff = diff_frame(frame, baseline)
    summary = summary_frame(rows, frame, metric, baseline)
    return EffectReport(list(dict.fromkeys(experiments)), metric, window, label_window,
                        baseline, frame.drop(columns=["variance"]), diff, summary)


__all__ = ["METRICS", "EffectReport", "diff_frame", "effect", "serve_outputs", "served_rows",
           "summary_frame", "window_frame"]
