"""URLs that may carry credentials (``http://user:password@host:port/path``).

Credentials in a Flink URL stay in the setting the user gave (``flink_url``,
``ULTRON_FLINK_URL``); everything ultron stores, logs or shows holds the URL without them
(:func:`strip_credentials`) or masked (:func:`mask_url`). :func:`endpoint` says whether two
URLs name the same server (scheme, host and port), with or without credentials;
:func:`local_path` is where a ``file:`` URL points on this machine.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its user part, and the ``(user, password)`` it held (or None)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, (unquote(user), unquote(password))


def strip_credentials(url: str) -> str:
    """``url`` without its user part (what may be stored, logged and shown)."""
    return split_credentials(url)[0]


def mask_url(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    clean, creds = split_credentials(url)
    if creds is None:
        return url
    parts = urlsplit(clean)
    user = f"{creds[0]}:***@" if ":" in urlsplit(url).netloc.rpartition("@")[0] else \
        f"{creds[0]}@"
    return urlunsplit((parts.scheme, user + parts.netloc, parts.path, parts.query,
                       parts.fragment))


def endpoint(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of ``url``: two URLs with the same endpoint name the same
    server, whatever their credentials, paths or trailing slashes."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = (parts.scheme or "http").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme, 0)


def local_path(location: str) -> Path | None:
    """The path on this machine of ``location`` (a path or a ``file:`` URL, as Flink writes
    a checkpoint's or savepoint's); None for another file system (``hdfs:``, ``s3:``...)."""
    parts = urlsplit(location)
    if parts.scheme not in ("", "file"):
        return None
    return Path(unquote(parts.path))
