"""Logging for the processes ultron owns (the scheduler daemon, node runners), and quiet
third-party loggers.

Library code only gets loggers (``logging.getLogger(__name__)``); it never configures the root
logger of a user's process. The entry points of ultron's OWN processes call
:func:`configure_process_logging`; the daemon's log file rotates. Third-party INFO chatter
(httpx's request lines, py4j's gateway lines) is turned down everywhere ultron runs, so it
reaches neither a user's cells nor a daemon's log.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from ultron_nb.files import open_private, private_dir

#: Loggers whose INFO lines are noise to a user of ultron.
CHATTY = ("httpx", "httpcore", "py4j", "py4j.java_gateway", "py4j.clientserver", "urllib3",
          "alembic", "mlflow", "apache_beam")

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def quiet_third_party(level: int = logging.WARNING) -> None:
    """Turn the :data:`CHATTY` loggers down to ``level`` (their own loggers, not the root)."""
    for name in CHATTY:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < level:
            logger.setLevel(level)


def configure_process_logging(*, level: int = logging.INFO, file: Path | None = None,
                              max_bytes: int = 5_000_000, backups: int = 3) -> None:
    """Root logging of a process ultron started itself: to ``file`` (rotated at
    ``max_bytes``, ``backups`` kept) or to standard error."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler: logging.Handler
    if file is not None:
        private_dir(file.parent)
        handler = PrivateRotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups,
                                             encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    quiet_third_party()


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files (the current one and each new one) are ``0600``."""

    def _open(self) -> IO[Any]:
        fd = open_private(Path(self.baseFilename), "ab")
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


class Repeats:
    """Log a failure once while it repeats, and once when it is over.

    A daemon that retries every second must not write the same line every second: the
    first occurrence of a failure (per ``key``) is logged, repeats of the same message are
    counted, a different message is logged again, and :meth:`ok` logs the recovery.
    """

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self._failing: dict[str, tuple[str, int, float]] = {}

    def failed(self, key: str, message: str, *, level: int = logging.ERROR,
               exc_info: Any = None) -> bool:
        """Note a failure; True when it was logged (it is new or its message changed)."""
        previous = self._failing.get(key)
        if previous is not None and previous[0] == message:
            self._failing[key] = (message, previous[1] + 1, previous[2])
            return False
        since = previous[2] if previous else time.monotonic()
        self._failing[key] = (message, 1 + (previous[1] if previous else 0), since)
        self.logger.log(level, "%s (retrying; logged again when it changes or recovers)",
                        message, exc_info=exc_info)
        return True

    def ok(self, key: str) -> None:
        """``key`` works again: log the recovery once if it had failed."""
        previous = self._failing.pop(key, None)
        if previous is not None:
            self.logger.info("%s: recovered after %d failed attempt(s) in %.0f s", key,
                             previous[1], time.monotonic() - previous[2])

    def failing(self, key: str) -> bool:
        return key in self._failing
