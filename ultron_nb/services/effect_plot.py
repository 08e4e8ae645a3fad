"""The plot of an effect report: the metric per label over time with its interval, and each
label's difference to the baseline. matplotlib (no pyplot state, no display backend) to SVG
text: it renders in JupyterLab and stays in the notebook through nbconvert."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ultron_nb.services.effect import EffectReport

COLOURS = ("#1c7ed6", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599")


def plot_svg(report: EffectReport, *, width: float = 8.0) -> str:
    from matplotlib.dates import DateFormatter
    from matplotlib.figure import Figure

    frame, diff = report.frame, report.diff
    panels = 2 if len(diff) else 1
    fig = Figure(figsize=(width, 2.8 * panels), layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    top = axes[0]
    for i, (label, rows) in enumerate(frame.groupby("label", sort=False)):
        colour = COLOURS[i % len(COLOURS)]
        x = rows["window_start"] + (rows["window_end"] - rows["window_start"]) / 2
        top.plot(x, rows["value"], color=colour, linewidth=1.4, marker=".", label=str(label))
        top.fill_between(x, rows["ci_low"], rows["ci_high"], color=colour, alpha=0.18,
                         linewidth=0)
    top.set_ylabel(report.metric)
    top.set_title(report.title, fontsize=9)
    if len(frame):
        top.legend(fontsize=8, loc="best")
    top.grid(alpha=0.3)
    if panels == 2:
        bottom = axes[1]
        for i, (label, rows) in enumerate(diff.groupby("label", sort=False)):
            colour = COLOURS[(i + 1) % len(COLOURS)]
            x = rows["window_start"] + (rows["window_end"] - rows["window_start"]) / 2
            bottom.plot(x, rows["diff"], color=colour, linewidth=1.2, marker=".",
                        label=f"{label} - {report.baseline}")
            bottom.fill_between(x, rows["ci_low"], rows["ci_high"], color=colour, alpha=0.18,
                                linewidth=0)
        bottom.axhline(0.0, color="#495057", linewidth=0.8)
        bottom.set_ylabel(f"Δ {report.metric}")
        bottom.legend(fontsize=8, loc="best")
        bottom.grid(alpha=0.3)
    axes[-1].xaxis.set_major_formatter(DateFormatter("%H:%M"))
    axes[-1].set_xlabel("event time (UTC)")
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    start = text.find("<svg")
    return text[start:] if start >= 0 else text


__all__ = ["plot_svg"]
