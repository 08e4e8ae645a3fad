"""Argument definitions shared by the faces (``%ultron`` magics and the ``ultron`` CLI).

Only parsing lives here; what an argument does is the API's business.
"""

from __future__ import annotations

import argparse
from typing import Any

from ultron_nb.flow.build import KIND_NAMES, parse_pairs


def add_node_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of a node definition (``%%ultron node NAME ...``)."""
    p.add_argument("name", help="node name (letters, digits, _)")
    p.add_argument("--kind", default=None, choices=KIND_NAMES,
                   help="flink (default), duckdb, python, or a resource: topic, kafka, "
                        "dataset, feature_table")
    p.add_argument("--mode", choices=("stream", "batch"),
                   help="flink nodes: stream (default) or batch")
    p.add_argument("--inputs", nargs="+", default=[], metavar="NODE",
                   help="data inputs beyond the tables the SQL reads (python nodes)")
    p.add_argument("--param", action="append", default=[], metavar="K=V",
                   help="a parameter, used in the body as ${K}; repeatable")
    p.add_argument("--option", action="append", default=[], metavar="K=V",
                   help="connector/engine option (kafka: topic=, bootstrap.servers=, ...)")
    p.add_argument("--time", help="resources: the event-time column")
    p.add_argument("--watermark", help="resources: watermark delay, e.g. '5 s'")
    p.add_argument("--key", help="resources: the entity key column")
    p.add_argument("--partitions", type=int, help="topics: number of partitions")
    p.add_argument("--path", help="resources: where the data lives")
    p.add_argument("--format", dest="fmt", help="resources: json (default), csv, parquet")
    p.add_argument("--fn", help="python nodes: the function to call (default: the only one)")
    p.add_argument("--bounded", action="store_true",
                   help="a batch node that reads a bounded slice of a stream")
    p.add_argument("--after", action="append", default=[], metavar="NODE",
                   help="start after NODE (finished if batch, running if stream)")
    p.add_argument("--stop-after", action="append", default=[], metavar="NODE",
                   help="stop when NODE stops")
    p.add_argument("--boundary", help="with --after STREAM: run once per event-time window, "
                                      "e.g. 1h")
    p.add_argument("--every", help="periodic: an interval (5m, 1h) or a cron expression")
    p.add_argument("--on-event", metavar="KEY", help="run when notification KEY gets a version")
    p.add_argument("--on-model", metavar="NAME",
                   help="run on each new version of registered model NAME (any MLflow client)")
    p.add_argument("--alias", help="with --on-model: run when this alias of the model is set, "
                                   "moved or deleted instead")
    p.add_argument("--when", help="event condition: equals:V, changed, version>N, json:EXPR "
                                  "(e.g. \"json:value['metrics']['auc'] > 0.7\")")
    p.add_argument("--action", default="start", choices=("start", "restart", "stop"),
                   help="what a trigger does (default start)")
    p.add_argument("--on-failure", action="store_true",
                   help="with --after BATCH: also run when it fails")
    p.add_argument("--description", default="", help="a line shown in the DAG's tooltip")


def node_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`ultron_nb.flow.build.define_node` from parsed flags."""
    return {
        "kind": args.kind,
        "mode": args.mode,
        "inputs": args.inputs,
        "params": parse_pairs(args.param, flag="--param"),
        "options": parse_pairs(args.option, flag="--option"),
        "time": args.time,
        "watermark": args.watermark,
        "key": args.key,
        "partitions": args.partitions,
        "path": args.path,
        "fmt": args.fmt,
        "fn": args.fn,
        "bounded": args.bounded,
        "after": args.after,
        "stop_after": args.stop_after,
        "boundary": args.boundary,
        "every": args.every,
        "on_event": args.on_event,
        "on_model": args.on_model,
        "alias": args.alias,
        "when": args.when,
        "action": args.action,
        "on_failure": args.on_failure,
        "description": args.description,
    }
