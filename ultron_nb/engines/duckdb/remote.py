"""History where it lives: ``hdfs://``, ``webhdfs://``, ``s3://`` (any fsspec protocol).

DuckDB reads such URLs through an fsspec filesystem registered on the connection
(``register_filesystem``), so ``glob``, ``read_parquet`` and ``read_json`` work on them as on
local paths. Local paths stay the default and never go through fsspec.

Credentials come from the filesystem's usual sources (for S3: the ``AWS_*`` environment
variables, ``~/.aws``, an instance role) or from ``storage_options``; they are never logged,
printed or stored: :func:`mask` hides a password or a secret-looking query value in any URL
before it is shown, and storage option values are never shown at all.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import duckdb

from ultron_nb.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Protocols backtracking is documented for; any other fsspec protocol works the same way.
DOCUMENTED = ("hdfs", "webhdfs", "s3", "s3a")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*):"
                       r"(?P<password>[^/@\s]*)@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:[a-z0-9_.-]*(?:key|secret|token|password|signature|"
                           r"credential|sig)[a-z0-9_.-]*)=)([^&\s]+)")
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs",
             "az": "adlfs"}


def scheme(path: Any) -> str | None:
    """The URL scheme of ``path`` (``"s3"``), or None for a local path."""
    match = _URL.match(str(path))
    return match.group(1).lower() if match else None


def mask(text: Any) -> str:
    """``text`` with every URL password and secret-looking query value replaced by ``***``."""
    out = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", str(text))
    return _SECRET_QUERY.sub(lambda m: f"{m.group(1)}***", out)


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The fsspec filesystem for ``url`` (host, port and user taken from the URL)."""
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - fsspec is a dependency
        raise ConfigError(f"{mask(url)}: reading remote history needs fsspec") from None
    proto = scheme(url) or "file"
    if proto not in fsspec.available_protocols():
        raise ConfigError(f"{mask(url)}: no filesystem for {proto}:// (known: "
                          f"{', '.join(DOCUMENTED)} and the other fsspec protocols)")
    try:
        fs, _ = url_to_fs(url, **dict(storage_options or {}))
    except ImportError as exc:
        package = _PACKAGES.get(proto, str(exc.name or "the filesystem's package"))
        raise ConfigError(f"{mask(url)}: reading {proto}:// needs {package} "
                          f"(pip install {package})") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{mask(url)}: {proto}:// filesystem: {mask(exc)} (check "
                          "storage options)") from None
    return fs


def attach(con: duckdb.DuckDBPyConnection, url: str,
           storage_options: Mapping[str, Any] | None = None) -> Any:
    """Register ``url``'s filesystem on ``con`` (nothing for local paths); return it."""
    if scheme(url) is None:
        if storage_options:
            raise ConfigError("storage options are for remote history (hdfs://, webhdfs://, "
                              "s3:// ...), not for a local path")
        return None
    fs = filesystem(url, storage_options)
    name = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    try:
        if name in con.list_filesystems():  # this call's options replace an earlier call's
            con.unregister_filesystem(name)
        con.register_filesystem(fs)
    except duckdb.Error as exc:
        raise DataError(f"{mask(url)}: DuckDB cannot use this filesystem: "
                        f"{mask(str(exc).splitlines()[0])}") from None
    log.debug("registered the %s filesystem for %s", type(fs).__name__, mask(url))
    return fs


def sizes(url: str, paths: list[str], storage_options: Mapping[str, Any] | None = None
          ) -> dict[str, int]:
    """Bytes of each of ``paths`` (files under ``url``), from one listing where possible."""
    import os

    if scheme(url) is None:
        return {p: os.stat(p).st_size for p in paths}
    fs = filesystem(url, storage_options)
    wanted = {fs._strip_protocol(p): p for p in paths}
    found: dict[str, int] = {}
    try:
        listing = fs.find(fs._strip_protocol(url), detail=True)
    except (OSError, ValueError):
        listing = {}
    for name, info in listing.items():
        if name in wanted:
            found[wanted[name]] = int(info.get("size") or 0)
    for stripped, path in wanted.items():
        if path not in found:
            found[path] = int(fs.size(stripped) or 0)
    return found
