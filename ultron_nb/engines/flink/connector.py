"""The ``ultron-topic`` Flink connector: local topics read as ordered, partitioned streams.

Flink's filesystem source hands a directory's files to its readers in no fixed order and
advances watermarks eagerly within a file, so segments appended together to a partition are
read out of order and their rows count as late. The connector (Java, in ``java/`` next to this
module) reads a topic the way a Kafka consumer reads a topic: one split per partition, taken
strictly in sequence (segment number, then byte offset), its position checkpointed, one
watermark per partition (the source's is the minimum). See ``java/src/ultron/flink/topic``.

The jar is built here from those sources with the JDK's ``javac`` and ``jar`` against the
Flink jars of the installed PyFlink wheel, into a cache directory, under a name keyed by a
digest of the sources, the Flink version and the Java release: a cache hit costs one hash of
a few small files; a change of the sources builds a new jar. Builds are atomic (written under
a temporary name, then renamed) and serialised across processes by a file lock. Jobs that read
a topic put the jar on ``pipeline.jars``, which ships it to the TaskManagers; so does every
stream job, whose output's hidden watermark column is written (and read back) by the jar's two
scalar functions (``WatermarkMillis``, ``MillisTimestamp``: epoch milliseconds, zone-free).

Run ``python -m ultron_nb.engines.flink.connector build`` once per environment (``make``
does); otherwise the first job that needs it builds it (a few seconds).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ultron_nb.errors import EngineError

log = logging.getLogger(__name__)

#: The connector's identifier in ``'connector' = ...``.
IDENTIFIER = "ultron-topic"
#: Where the Java sources and resources live.
SOURCES = Path(__file__).with_name("java")
#: Class files for this Java release: runs on any JVM Flink supports (11+).
JAVA_RELEASE = "11"
#: Environment variable naming the jar cache directory.
CACHE_ENV = "ULTRON_JAR_CACHE"
JDK_HINT = "install a JDK: apt-get install -y openjdk-17-jdk-headless"


def _pyflink_home() -> Path:
    from ultron_nb.engines.flink.cluster import pyflink_home

    return pyflink_home()


def flink_classpath() -> list[Path]:
    """The Flink jars of the PyFlink wheel the connector compiles against."""
    return sorted((_pyflink_home() / "lib").glob("*.jar"))


def flink_version() -> str:
    """The installed PyFlink version (read, not imported)."""
    text = (_pyflink_home() / "version.py").read_text()
    m = re.search(r"__version__\s*=\s*[\"']([^\"']+)[\"']", text)
    return m.group(1) if m else "unknown"


def default_cache_dir() -> Path:
    """``$ULTRON_JAR_CACHE``, else ``<sys.prefix>/share/ultron_nb/jars`` when writable, else
    ``~/.cache/ultron_nb/jars``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    shared = Path(sys.prefix) / "share" / "ultron_nb" / "jars"
    probe = shared if shared.exists() else shared.parent.parent
    if os.access(probe, os.W_OK):
        return shared
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ultron_nb" / "jars"


def _files(sources: Path) -> list[Path]:
    return sorted(p for p in sources.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def source_digest(sources: Path = SOURCES) -> str:
    """A digest of the connector's sources, the Flink version and the Java release."""
    digest = hashlib.sha256()
    digest.update(f"flink={flink_version()};release={JAVA_RELEASE}\0".encode())
    for path in _files(sources):
        digest.update(path.relative_to(sources).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def jar_name(sources: Path = SOURCES) -> str:
    return f"{IDENTIFIER}-{flink_version()}-{source_digest(sources)[:16]}.jar"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        java_home = os.environ.get("JAVA_HOME")
        candidate = Path(java_home) / "bin" / name if java_home else None
        if candidate is None or not candidate.is_file():
            raise EngineError(f"building the {IDENTIFIER} connector needs the JDK's `{name}`, "
                              f"which is not on PATH: {JDK_HINT}")
        found = str(candidate)
    return found


def _run(cmd: Sequence[str], what: str) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()] or lines
        raise EngineError(f"building the {IDENTIFIER} connector failed ({what}): "
                          + " | ".join(errors[:3])[:600])


def _build(sources: Path, target: Path) -> None:
    javac, jar = _tool("javac"), _tool("jar")
    java_files = [str(p) for p in _files(sources / "src") if p.suffix == ".java"]
    classpath = os.pathsep.join(str(p) for p in flink_classpath())
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        classes = Path(tmp) / "classes"
        classes.mkdir()
        _run([javac, "--release", JAVA_RELEASE, "-nowarn", "-encoding", "UTF-8", "-cp", classpath,
              "-d", str(classes), *java_files], "javac")
        if (sources / "resources").is_dir():
            shutil.copytree(sources / "resources", classes, dirs_exist_ok=True)
        partial = Path(tmp) / target.name
        _run([jar, "--create", "--file", str(partial), "-C", str(classes), "."], "jar")
        os.replace(partial, target)


def connector_jar(*, cache_dir: Path | None = None, sources: Path = SOURCES) -> Path:
    """The connector jar for these sources and this Flink, built if it is not cached yet."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / jar_name(sources)
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineError(f"cannot create the jar cache {folder}: {exc.strerror}") from None
    with _locked(folder / f".{target.name}.lock"):
        if not target.is_file():  # another process may have built it meanwhile
            log.info("building the %s connector into %s", IDENTIFIER, target)
            _build(sources, target)
    return target


def connector_jar_url(*, cache_dir: Path | None = None) -> str:
    """``file://`` URL of :func:`connector_jar`, the form ``pipeline.jars`` takes."""
    return connector_jar(cache_dir=cache_dir).resolve().as_uri()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ultron_nb.engines.flink.connector build|path [--cache DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m ultron_nb.engines.flink.connector",
                                     description=f"Build or locate the {IDENTIFIER} jar.")
    parser.add_argument("command", choices=("build", "path"),
                        help="build: build it unless cached (idempotent); path: where it goes")
    parser.add_argument("--cache", type=Path, default=None,
                        help=f"jar cache directory (default: {default_cache_dir()})")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            path = connector_jar(cache_dir=args.cache)
        else:
            path = (args.cache or default_cache_dir()) / jar_name()
    except EngineError as exc:
        sys.stderr.write(f"EngineError: {exc}\n")
        return 1
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
