"""Kafka topics for Flink: the connector jars and the ``CREATE TABLE`` DDL of a kafka node.

The pyflink wheel bundles no Kafka connector. On PyPI the Flink Kafka connector and the
``kafka-clients`` jar exist only inside the third-party ``shigawire-apache-flink-libraries``
wheel, which must never be pip-*installed*: it writes its own copies of Flink's jars into
``pyflink/lib``. :func:`install_connector_jars` therefore downloads that wheel with
``pip download --no-deps`` and extracts exactly two jars (checked against pinned SHA-256
digests) into ``<sys.prefix>/share/ultron_nb/jars/``; jobs put them on ``pipeline.jars``.
The pinned wheel carries flink-connector-kafka ``4.0.1-2.0`` (built for the Flink 2.0 API,
which Flink 2.3 keeps; tested end to end on 2.3: source, sink, watermarks, checkpoints) and
kafka-clients ``3.9.1``. This is the thin connector, not the ``flink-sql-connector-kafka``
uber jar: kafka-clients' optional zstd-jni is absent, so a topic holding zstd-compressed
batches fails the job (``ClassNotFoundException: com.github.luben.zstd.BufferPool``); gzip,
snappy and lz4 work (Flink's own dist carries snappy and lz4).

Run ``python -m ultron_nb.engines.flink.kafka install`` once per environment (``make`` does).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ultron_nb.engines.flink.ddl import interval_literal, quote_ident, quote_str
from ultron_nb.errors import ClusterError, FlowError
from ultron_nb.flow.nodes import Node, ResourceType

log = logging.getLogger(__name__)

#: The wheel the jars come from (pinned: the digests below belong to this version).
WHEEL_REQUIREMENT = "shigawire-apache-flink-libraries==2.0.0.post1"

#: The command that installs the jars, as users type it.
INSTALL_COMMAND = "python -m ultron_nb.engines.flink.kafka install"


@dataclass(frozen=True)
class _Jar:
    member: str  # path inside the wheel
    name: str  # file name in the jar directory
    sha256: str
    size: int


#: The two jars a Kafka SQL job needs, and nothing else from that wheel.
JARS: tuple[_Jar, ...] = (
    _Jar(
        member="pyflink/lib/flink-connector-kafka.jar",
        name="flink-connector-kafka-4.0.1-2.0.jar",
        sha256="842885a51c768b2f31c946a2071656c166ee8cc6d3c02fe6c557e134e03bf228",
        size=373_398,
    ),
    _Jar(
        member="pyflink/lib/kafka-clients.jar",
        name="kafka-clients-3.9.1.jar",
        sha256="7568b998572d256f0b7bc0afdc1b7a2588b8b08415c62ce314c864a6851ae9d9",
        size=9_215_194,
    ),
)


def default_jar_dir() -> Path:
    """Where the jars live unless told otherwise: ``<sys.prefix>/share/ultron_nb/jars``."""
    return Path(sys.prefix) / "share" / "ultron_nb" / "jars"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _intact(path: Path, jar: _Jar, *, full: bool) -> bool:
    """Is ``path`` this jar? ``full`` checks the digest, otherwise the size only."""
    try:
        if path.stat().st_size != jar.size:
            return False
    except OSError:
        return False
    return not full or _sha256(path) == jar.sha256


def _download_wheel(into: Path) -> Path:
    """``pip download --no-deps`` the pinned wheel into ``into``; return the wheel's path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(into), WHEEL_REQUIREMENT,
    ]
    log.info("downloading %s (without installing it)", WHEEL_REQUIREMENT)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {proc.returncode}"
        raise ClusterError(f"cannot download {WHEEL_REQUIREMENT} with pip: {last}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise ClusterError(f"pip download of {WHEEL_REQUIREMENT} left {len(wheels)} wheels "
                           f"in {into}, expected one")
    return wheels[0]


def _extract(wheel: Path, dest: Path) -> None:
    """Copy the two jars out of ``wheel`` into ``dest``, each written atomically."""
    with zipfile.ZipFile(wheel) as zf:
        for jar in JARS:
            try:
                info = zf.getinfo(jar.member)
            except KeyError:
                raise ClusterError(f"{wheel.name} has no {jar.member}") from None
            target = dest / jar.name
            fd, tmp_name = tempfile.mkstemp(prefix=f".{jar.name}.", dir=dest)
            tmp = Path(tmp_name)
            try:
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    for chunk in iter(lambda src=src: src.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != jar.sha256:
                    raise ClusterError(
                        f"{jar.member} in {wheel.name} has SHA-256 {digest.hexdigest()}, "
                        f"expected {jar.sha256}: refusing to use it"
                    )
                tmp.chmod(0o644)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            log.info("extracted %s", target)


def install_connector_jars(dest: Path | None = None) -> list[Path]:
    """Make the Kafka connector and kafka-clients jars available in ``dest``; their paths.

    Idempotent: when both jars are already there with the pinned digests nothing is
    downloaded. Otherwise the pinned wheel is downloaded (never installed) into a temporary
    directory and only the two jars are extracted. Raises :class:`ClusterError` when pip
    cannot download the wheel or a jar does not match its digest.
    """
    folder = Path(dest) if dest is not None else default_jar_dir()
    paths = [folder / jar.name for jar in JARS]
    if all(_intact(p, jar, full=True) for p, jar in zip(paths, JARS, strict=True)):
        log.debug("Kafka connector jars already in %s", folder)
        return paths
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClusterError(f"cannot create the jar directory {folder}: {exc.strerror}") \
            from None
    with tempfile.TemporaryDirectory(prefix="ultron-kafka-wheel-") as tmp:
        wheel = _download_wheel(Path(tmp))
        _extract(wheel, folder)
    return paths


def connector_jars(dest: Path | None = None) -> list[Path]:
    """The installed connector jars (connector first), or :class:`ClusterError` saying how
    to install them."""
    folder = Path(dest) if dest is not None else default_jar_dir()
    paths = [folder / jar.name for jar in JARS]
    missing = [p.name for p, jar in zip(paths, JARS, strict=True) if not _intact(p, jar,
                                                                                full=False)]
    if missing:
        where = "" if dest is None else f" --dest {folder}"
        raise ClusterError(
            f"the Flink Kafka connector jars are not installed ({', '.join(missing)} missing "
            f"in {folder}): run `{INSTALL_COMMAND}{where}`"
        )
    return paths


def connector_jar_urls(dest: Path | None = None) -> list[str]:
    """``file://`` URLs of :func:`connector_jars`, the form ``pipeline.jars`` takes."""
    return [p.resolve().as_uri() for p in connector_jars(dest)]


# --------------------------------------------------------------------------------- DDL

#: Options given without the connector's ``properties.`` prefix.
_SHORTHANDS: Mapping[str, str] = {
    "bootstrap.servers": "properties.bootstrap.servers",
    "group.id": "properties.group.id",
}

#: Connector options passed through as they are (see Flink's Kafka SQL connector): these keys,
#: and every key under these prefixes (``properties.*`` are Kafka client properties).
_PASSTHROUGH = frozenset({"topic", "topic-pattern", "format"})
_PASSTHROUGH_PREFIXES = ("properties.", "scan.", "sink.", "key.", "value.")

#: ultron's own options of a kafka node, which are not connector options.
_ULTRON_OPTIONS = frozenset({"partitions"})

#: ``properties.isolation.level``: a job reads what transactional producers committed, never
#: the records of a transaction still open (or aborted; Kafka's client drops those), which
#: would count twice once the producer retries them. ``read_uncommitted`` can be given.
_DEFAULTS: Mapping[str, str] = {"scan.startup.mode": "earliest-offset", "format": "json",
                                "properties.isolation.level": "read_committed"}



def connector_options(node: Node) -> dict[str, str]:
    """The ``WITH`` options of a kafka node: shorthands expanded, defaults filled in.

    Accepted: ``topic``, ``bootstrap.servers`` and ``group.id`` (the connector's
    ``properties.`` prefix added), any ``properties.*`` Kafka client property, the
    connector's ``scan.*``/``sink.*``/``key.*``/``value.*`` options, ``format`` and the
    format's own options (``json.ignore-parse-errors``, ...). Anything else raises
    :class:`FlowError` naming the node: a typo would otherwise surface only when Flink
    plans the job.
    """
    given = node.option_dict
    formats = {given.get("value.format") or given.get("format") or _DEFAULTS["format"]}
    if given.get("key.format"):
        formats.add(given["key.format"])
    format_prefixes = tuple(f"{f}." for f in formats)
    options: dict[str, str] = {"connector": "kafka"}
    unknown: list[str] = []
    for key, value in given.items():
        if key in _ULTRON_OPTIONS:
            continue
        if key == "connector":
            if value != "kafka":
                raise FlowError(f"node {node.name!r}: a kafka resource uses connector "
                                f"'kafka', not {value!r}")
        elif key in _SHORTHANDS:
            target = _SHORTHANDS[key]
            if given.get(target, value) != value:
                raise FlowError(f"node {node.name!r}: --option {key} and --option {target} "
                                "disagree; give one of them")
            options[target] = value
        elif (key in _PASSTHROUGH or key.startswith(_PASSTHROUGH_PREFIXES)
              or key.startswith(format_prefixes)):
            options[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise FlowError(
            f"node {node.name!r}: unknown kafka option(s) {', '.join(sorted(unknown))} (use "
            "topic, bootstrap.servers, group.id, scan.*, sink.*, format and its options, or "
            "properties.* for any Kafka client property)"
        )
    if "properties.bootstrap.servers" not in options:
        raise FlowError(f"node {node.name!r}: a kafka resource needs --option "
                        "bootstrap.servers=HOST:PORT")
    if "topic" not in options and "topic-pattern" not in options:
        raise FlowError(f"node {node.name!r}: a kafka resource needs --option topic=NAME")
    options.setdefault("scan.startup.mode", _DEFAULTS["scan.startup.mode"])
    options.setdefault("properties.isolation.level", _DEFAULTS["properties.isolation.level"])
    if "value.format" not in options:
        options.setdefault("format", _DEFAULTS["format"])
    return options


def kafka_table_ddl(node: Node, table_name: str) -> str:
    """Flink SQL ``CREATE TABLE`` for a kafka resource node, with its watermark if any.

    Columns come from ``node.columns``; ``node.time_column`` with ``node.watermark`` (e.g.
    ``'5 s'``) becomes ``WATERMARK FOR `ts` AS `ts` - INTERVAL '5' SECOND`` (a time column
    without a delay gets a watermark that trails by nothing). The options are those of
    :func:`connector_options`. Identifiers are back-quoted, option values are escaped.
    """
    if node.resource_type is not ResourceType.KAFKA:
        raise FlowError(f"node {node.name!r}: kafka DDL needs a kafka resource, not "
                        f"{node.resource_type or node.kind}")
    if not node.columns:
        raise FlowError(f"node {node.name!r}: a kafka resource needs columns")
    lines = [f"  {quote_ident(c.name)} {c.type}" for c in node.columns]
    if node.time_column:
        column = next((c for c in node.columns if c.name == node.time_column), None)
        if column is None:
            raise FlowError(f"node {node.name!r}: --time {node.time_column!r} is not a column")
        if not column.type.upper().startswith("TIMESTAMP"):
            raise FlowError(
                f"node {node.name!r}: the time column {column.name!r} is {column.type}; "
                "an event-time column must be TIMESTAMP(3) or TIMESTAMP_LTZ(3)"
            )
        ident = quote_ident(column.name)
        if node.watermark:
            delay = interval_literal(node.watermark)
            lines.append(f"  WATERMARK FOR {ident} AS {ident} - {delay}")
        else:
            lines.append(f"  WATERMARK FOR {ident} AS {ident}")
    options = connector_options(node)
    with_lines = [f"  {quote_str(k)} = {quote_str(v)}" for k, v in options.items()]
    return (
        f"CREATE TABLE {quote_ident(table_name)} (\n"
        + ",\n".join(lines)
        + "\n) WITH (\n"
        + ",\n".join(with_lines)
        + "\n)"
    )


# ---------------------------------------------------------------------------- command


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ultron_nb.engines.flink.kafka install|paths [--dest DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m ultron_nb.engines.flink.kafka",
        description="Install or locate the Flink Kafka connector jars "
                    f"(extracted from {WHEEL_REQUIREMENT}, never pip-installed).",
    )
    parser.add_argument("command", choices=("install", "paths"),
                        help="install: download and extract the jars (idempotent); "
                             "paths: print where they are")
    parser.add_argument("--dest", type=Path, default=None,
                        help=f"jar directory (default: {default_jar_dir()})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "install":
            paths = install_connector_jars(args.dest)
        else:
            paths = connector_jars(args.dest)
    except ClusterError as exc:
        sys.stderr.write(f"ClusterError: {exc}\n")
        return 1
    sys.stdout.write("".join(f"{p}\n" for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
