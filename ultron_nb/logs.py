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
import sys
from pathlib import Path

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
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes,
                                                       backupCount=backups, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    quiet_third_party()
