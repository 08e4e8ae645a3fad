"""How a node's Flink job is configured: defaults, per-node options, the job's name and the
sink that writes its output.

A node's ``--option`` without a dot overrides a default below (``parallelism=2``,
``checkpoint_interval=1 s``); one with a dot is a Flink setting passed as it is
(``table.exec.mini-batch.enabled=true``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ultron_nb.engines.flink import ddl
from ultron_nb.engines.flink.submit import JobSpec, target_configuration
from ultron_nb.errors import SqlError

log = logging.getLogger(__name__)

DEFAULTS = {
    "parallelism": "1",
    "checkpoint_interval": "5 s",
    "idle_timeout": "",  # none: see ultron_nb.engines.flink.ddl
    "monitor_interval": "500 ms",
    "rollover": "2 s",
    "restart_attempts": "2",
    "restart_delay": "2 s",
}


def node_option(options: Mapping[str, str], key: str) -> str:
    """A node's ``--option key=`` or its default."""
    return options.get(key, DEFAULTS[key])


def parallelism(options: Mapping[str, str]) -> int:
    """The slots one job of the node takes (slot sharing: its parallelism)."""
    try:
        return max(1, int(node_option(options, "parallelism")))
    except ValueError:
        return 1


def pipeline_name(experiment: str, node: str, instance: str) -> str:
    return f"ultron {experiment}/{node} [{instance}]"


def job_name(spec: JobSpec, attempt: int) -> str:
    """The name of attempt ``attempt`` of a node's job on the cluster (unique per instance
    and attempt: the way back to a job whose id was never recorded)."""
    return f"{spec.config.get('pipeline.name') or spec.node} #{attempt}"


def job_config(options: Mapping[str, str], *, node: str, experiment: str, instance: str,
               target: str, live: bool, headers: Mapping[str, str] | None = None,
               verify: bool | str = True, extra_jars: Sequence[str] = ()) -> dict[str, str]:
    """The Flink configuration of one node's job on ``target``."""
    conf = target_configuration(target, headers=headers or {}, verify=verify)
    conf.update({
        "pipeline.name": pipeline_name(experiment, node, instance),
        "parallelism.default": node_option(options, "parallelism"),
        "execution.checkpointing.interval": ddl.flink_duration(
            node_option(options, "checkpoint_interval")),
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": node_option(options, "restart_attempts"),
        "restart-strategy.fixed-delay.delay": ddl.flink_duration(
            node_option(options, "restart_delay")),
    })
    idle = node_option(options, "idle_timeout")
    if live and idle:
        conf["table.exec.source.idle-timeout"] = ddl.flink_duration(idle)
    if extra_jars:
        conf["pipeline.jars"] = ";".join(
            j if j.startswith("file:") else Path(j).resolve().as_uri()
            for j in dict.fromkeys(extra_jars))
    for key, value in options.items():
        if "." in key:
            conf[key] = value
    return conf


def plan_sink(job: JobSpec, columns: list[tuple[str, str]], *, node: str, folder: Path,
              is_stream: bool, time_column: str | None, watermark: str | None,
              input_delays: Sequence[float], options: Mapping[str, str],
              ) -> tuple[str, dict[str, Any]]:
    """The sink DDL for a node whose query resolved to ``columns``, and the output record
    its readers use (layout ``flink``: path, columns, event time and watermark).

    A stream node whose output has a rowtime and no declared watermark writes its
    watermark at emission in the hidden column ``__wm`` (``job.rowtime`` is set), in
    milliseconds since the epoch, which readers take as their watermark, exact whatever the
    output's disorder. Such a job calls a function of the connector jar, so every stream
    job has that jar.
    """
    rowtimes = [n for n, t in columns if t.endswith("*ROWTIME*")]
    time_col = rowtimes[0] if rowtimes else time_column
    clean = [(n, ddl.strip_time_attribute(t).replace(" NOT NULL", "")) for n, t in columns]
    if time_col and time_col not in {n for n, _ in clean}:
        raise SqlError(f"node {node!r}: --time {time_col!r} is not an output column")
    sink_cols = list(clean)
    wm_column = None
    if rowtimes and is_stream and not watermark:
        job.rowtime = rowtimes[0]
        job.watermark_format = ddl.EPOCH_MS  # a number: a fraction of a timestamp's cost
        wm_column = ddl.WATERMARK_COLUMN
        sink_cols.append((ddl.WATERMARK_COLUMN, "BIGINT"))
    output: dict[str, Any] = {
        "kind": "topic", "layout": "flink", "path": str(folder), "format": "json",
        "partitions": parallelism(options),
        "columns": [list(c) for c in clean], "time_column": time_col,
        "rowtime": rowtimes[0] if rowtimes else None,
        "watermark": watermark or (f"{max(input_delays):g} s" if input_delays and not
                                   wm_column else None),
        "watermark_column": wm_column,
        "watermark_format": ddl.EPOCH_MS if wm_column else None,
    }
    # At most one committed file per sink subtask per checkpoint: readers then see the
    # files of a subtask one at a time, in order.
    rollover = max(ddl.duration_seconds(node_option(options, "rollover")),
                   2 * ddl.duration_seconds(node_option(options, "checkpoint_interval")))
    return ddl.sink_table(job.sink_name, ddl.output_folder(folder), sink_cols,
                          rollover=f"{rollover:g} s"), output
