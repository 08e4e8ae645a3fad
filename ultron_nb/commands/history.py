"""Verbs of history and features: backtracking (prepare, check, replay) and the feature store."""

from __future__ import annotations

import argparse
from typing import Any

from ultron_nb.commands.registry import Face, Run, command
from ultron_nb.errors import ConfigError
from ultron_nb.flow.build import parse_pairs


# ------------------------------------------------------------------ backtracking
def list_subcommands(parser: argparse.ArgumentParser, subparsers: Any) -> None:
    """Make ``parser``'s help show each sub-command's own flags (``%ultron help VERB``)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "\n".join(sub.format_help() for sub in subparsers.choices.values())


def add_storage_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-option", dest="storage_options", action="append", default=[],
                   metavar="K=V", help="an option of the hdfs:// webhdfs:// s3:// filesystem, "
                   "e.g. endpoint_url=http://127.0.0.1:9000 (credentials: use the "
                   "filesystem's environment variables); repeatable")


def _backtrack_parsers(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                           parser_class=type(p))
    prep = sub.add_parser("prepare", add_help=p.add_help, prog=f"{p.prog} prepare",
                          help="hash-partition history by key, order by event time")
    prep.add_argument("source", help="ROOT/date=YYYY-MM-DD/hour=HH/ (Parquet or JSON lines): "
                      "a path, hdfs://, webhdfs:// or s3://")
    prep.add_argument("--key", required=True, nargs="+")
    prep.add_argument("--time", required=True)
    prep.add_argument("--partitions", type=int, required=True)
    prep.add_argument("--from", dest="start", required=True, help="first hour (inclusive)")
    prep.add_argument("--to", dest="end", required=True, help="end (exclusive)")
    prep.add_argument("--out", help="topic directory (default: .ultron/topics/<source name>)")
    prep.add_argument("--format", dest="fmt", choices=("parquet", "json"))
    prep.add_argument("--allow", nargs="+", default=[], metavar="KIND",
                      help="problem kinds to accept (e.g. missing_partition schema_drift; "
                      "missing_hour is another name of missing_partition)")
    prep.add_argument("--null-keys", choices=("fail", "route"), default="fail",
                      help="route: write rows with null keys to OUT/_null_keys.jsonl")
    prep.add_argument("--plan", action="store_true", help="only show what would be read: "
                      "partitions found and pruned, files, bytes, rows, memory")
    add_storage_options(prep)
    chk = sub.add_parser("check", add_help=p.add_help, prog=f"{p.prog} check",
                         help="check the source, or a topic's order (fails when problems)")
    chk.add_argument("what", choices=("source", "order"))
    chk.add_argument("path")
    chk.add_argument("--key", nargs="+")
    chk.add_argument("--time")
    chk.add_argument("--from", dest="start")
    chk.add_argument("--to", dest="end")
    chk.add_argument("--allow", nargs="+", default=[], metavar="KIND")
    add_storage_options(chk)
    rep = sub.add_parser("run", add_help=p.add_help, prog=f"{p.prog} run",
                         help="replay prepared history through a node's real-time definition")
    rep.add_argument("node")
    rep.add_argument("--flow")
    rep.add_argument("--input", action="append", default=[], metavar="RESOURCE=TOPIC_DIR",
                     help="replay this prepared topic as the resource; repeatable")
    rep.add_argument("--from", dest="start", help="event time from (inclusive)")
    rep.add_argument("--to", dest="end", help="event time to (exclusive)")
    rep.add_argument("--name", help="the replay experiment's name")
    list_subcommands(p, sub)


@command("backtrack", "replayable history: prepare ordered partitions, replay a node, check")
def _backtrack(p: argparse.ArgumentParser) -> Run:
    _backtrack_parsers(p)

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import backtrack

        ws = face.workspace
        if a.action in ("prepare", "check"):
            options = parse_pairs(a.storage_options, flag="--storage-option") or None
        if a.action == "prepare":
            if a.plan:
                return backtrack.plan(a.source, start=a.start, end=a.end,
                                      partitions=a.partitions, fmt=a.fmt,
                                      storage_options=options)
            return backtrack.prepare(a.source, key=a.key, time=a.time,
                                     partitions=a.partitions, start=a.start, end=a.end,
                                     out=a.out, fmt=a.fmt, settings=ws.settings,
                                     allow=a.allow, null_keys=a.null_keys,
                                     storage_options=options)
        if a.action == "check":
            if a.what == "order":
                return backtrack.check_order(a.path, time=a.time)
            if not (a.key and a.time and a.start and a.end):
                raise ConfigError("backtrack check source needs --key, --time, --from, --to")
            return backtrack.check_source(a.path, key=a.key, time=a.time, start=a.start,
                                          end=a.end, allow=a.allow, storage_options=options)
        from ultron_nb.services import replay

        return replay.replay(ws, face.current_flow(a.flow), a.node,
                             inputs=parse_pairs(a.input, flag="--input"),
                             start=a.start, end=a.end, name=a.name)

    return run




# ------------------------------------------------------------------ feature store
def _per_table(values: list[str], flag: str) -> Any:
    """``["c"]`` -> "c"; ``["a,b"]`` -> ["a", "b"]; ``["t=c", "u=a,b"]`` -> {table: value}."""
    if not values:
        return None
    if all("=" in v for v in values):
        pairs = parse_pairs(values, flag=flag)
        return {t: (v.split(",") if "," in v else v) for t, v in pairs.items()}
    if len(values) == 1:
        return values[0].split(",") if "," in values[0] else values[0]
    raise ConfigError(f"{flag}: give one value for every table, or TABLE=VALUE pairs")


def _features_parsers(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                           parser_class=type(p))
    wr = sub.add_parser("write", add_help=p.add_help, prog=f"{p.prog} write",
                        help="store a file's rows as versions of a table")
    wr.add_argument("table")
    wr.add_argument("source", help="Parquet, JSON lines or CSV file (or glob)")
    wr.add_argument("--key", required=True, nargs="+")
    wr.add_argument("--version-time", required=True, help="column: when the values became valid")
    wr.add_argument("--ingest-time", help="column: when they were learnt (default: now)")
    wr.add_argument("--unit", choices=("s", "ms", "us", "ns"), help="unit of epoch numbers")
    wr.add_argument("--null-keys", choices=("fail", "drop"), default="fail")
    look = sub.add_parser("as-of", add_help=p.add_help, prog=f"{p.prog} as-of",
                          help="each sample joined to the versions valid at its event time")
    look.add_argument("tables", nargs="+", metavar="TABLE[:FEATURE,...]")
    look.add_argument("--samples", required=True, help="Parquet, JSON lines or CSV file")
    look.add_argument("--time", required=True, help="the samples' event-time column")
    look.add_argument("--key", nargs="+", default=[], metavar="COL|TABLE=COL[,COL]",
                      help="sample key column(s) (default: each table's key names)")
    look.add_argument("--known-at", help="known-time mode: a samples column or a timestamp")
    look.add_argument("--ttl", nargs="+", default=[], metavar="AGE|TABLE=AGE",
                      help="maximum age of a version, e.g. 7d or user_stats=2h")
    look.add_argument("--unit", choices=("s", "ms", "us", "ns"), help="unit of epoch numbers")
    look.add_argument("--out", help="write the result here (.parquet, .csv, .jsonl)")
    sub.add_parser("tables", add_help=p.add_help, prog=f"{p.prog} tables",
                   help="the feature tables")
    ver = sub.add_parser("versions", add_help=p.add_help, prog=f"{p.prog} versions",
                         help="the versions of one entity (or all), oldest first")
    ver.add_argument("table")
    ver.add_argument("--key", nargs="+", help="the entity's key value(s)")
    ver.add_argument("--history", action="store_true", help="with superseded versions")
    chk = sub.add_parser("check", add_help=p.add_help, prog=f"{p.prog} check",
                         help="leakage, or version consistency of generated samples "
                         "(fails when problems)")
    chk.add_argument("what", choices=("leakage", "versions"))
    chk.add_argument("samples", help="the samples (with the version time each one read)")
    chk.add_argument("--time", required=True, help="the samples' event-time column")
    chk.add_argument("--feature-time", required=True, nargs="+",
                     help="leakage: the column(s) of joined version (or ingest) times; "
                     "versions: the column of the version each sample read")
    chk.add_argument("--features", help="versions: the feature node's output (a file)")
    chk.add_argument("--key", nargs="+")
    chk.add_argument("--version-time", default="version_time",
                     help="versions: the version-time column of --features")
    for parser in (wr, look, ver):
        parser.add_argument("--root", help="the store's folder (default: .ultron/features)")
    list_subcommands(p, sub)


@command("features", "the versioned feature store: write, as-of lookups, tables, versions, "
         "leakage and version-consistency checks")
def _features(p: argparse.ArgumentParser) -> Run:
    _features_parsers(p)

    def run(face: Face, a: argparse.Namespace, _body: str | None) -> Any:
        from ultron_nb.services import backtrack, features

        ws = face.workspace
        if a.action == "write":
            return features.write_features(ws.settings, a.table, a.source, key=a.key,
                                           version_time=a.version_time,
                                           ingest_time=a.ingest_time, unit=a.unit,
                                           null_keys=a.null_keys, root=a.root)
        if a.action == "as-of":
            return features.lookup(ws.settings, a.tables, a.samples, time=a.time,
                                   key=_per_table(a.key, "--key"), known_at=a.known_at,
                                   ttl=_per_table(a.ttl, "--ttl"), unit=a.unit, out=a.out,
                                   root=a.root)
        if a.action == "tables":
            return features.list_tables(ws.settings)
        if a.action == "versions":
            key = None if not a.key else (a.key[0] if len(a.key) == 1 else tuple(a.key))
            return features.versions(ws.settings, a.table, key, history=a.history,
                                     root=a.root)
        if a.what == "leakage":
            return backtrack.check_leakage(a.samples, a.feature_time, a.time, key=a.key)
        if not (a.features and a.key and len(a.feature_time) == 1):
            raise ConfigError("features check versions needs --features FILE, --key and one "
                              "--feature-time column")
        return backtrack.check_version_consistency(
            a.features, a.samples, key=a.key, sample_time=a.time, version=a.feature_time[0],
            feature_time=a.version_time)

    return run
