"""The exception tree of ultron_nb.

Every error a user can cause derives from :class:`UltronError`. Faces (magics, CLI, server)
turn these into one-line messages; anything else is a bug and keeps its traceback.

::

    UltronError
    ├── FlowError            a flow or node definition is invalid
    │   ├── CycleError       the data/control edges form a cycle
    │   ├── UnknownNodeError a reference names no node
    │   └── DuplicateNodeError
    ├── StoreError           the metadata store cannot be used
    │   └── SchemaVersionError
    ├── NotFoundError        a named flow, experiment, node, job ... does not exist
    ├── EngineError          an engine (Flink, DuckDB, Python) refused or failed
    │   ├── ClusterError     the Flink cluster cannot be started, reached or used
    │   ├── SqlError         a SQL statement is invalid (planner message, node named)
    │   └── JobFailedError   a job failed (root cause attached)
    ├── DataError            input data is malformed (file and column named)
    ├── DiskError            the file system refused a write: full, read-only, not permitted
    └── ConfigError          a setting is invalid
"""

from __future__ import annotations

import errno


class UltronError(Exception):
    """Base of every error a user can cause; the message is one line meant for people."""


class FlowError(UltronError):
    """A flow or node definition is invalid."""


class CycleError(FlowError):
    """The edges of a flow form a cycle."""


class UnknownNodeError(FlowError):
    """A reference (input, edge, table) names no node of the flow."""


class DuplicateNodeError(FlowError):
    """Two nodes share a name."""


class StoreError(UltronError):
    """The metadata store cannot be opened or used."""


class SchemaVersionError(StoreError):
    """The metadata store has a schema version this code cannot use."""


class NotFoundError(UltronError):
    """A named object (flow, experiment, node, job, event key) does not exist."""


class EngineError(UltronError):
    """An engine refused or failed a request."""


class ClusterError(EngineError):
    """A Flink cluster cannot be started, reached or used."""


class SqlError(EngineError):
    """A SQL statement is invalid; the message names the node and the planner's useful line."""


class JobFailedError(EngineError):
    """A job failed; the message carries the root cause."""


class DataError(UltronError):
    """Input data is malformed; the message names the file and column."""


class DiskError(UltronError):
    """The file system refused a write (no space left, read-only, not permitted); the
    message names the path."""


class ConfigError(UltronError):
    """A setting is invalid; the message names the setting."""


#: What an OSError's errno means to a user, for the faults of the machine (not of ultron).
_DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def disk_error(exc: BaseException) -> DiskError | None:
    """The one-line :class:`DiskError` of an OSError caused by the machine (a full or
    read-only disk, missing permissions), naming the path; None for any other error."""
    if not isinstance(exc, OSError) or exc.errno not in _DISK_ERRNOS:
        return None
    where = exc.filename if exc.filename is not None else "a file"
    return DiskError(f"cannot write {where}: {_DISK_ERRNOS[exc.errno]}")


__all__ = [
    "ClusterError",
    "ConfigError",
    "CycleError",
    "DataError",
    "DiskError",
    "DuplicateNodeError",
    "EngineError",
    "FlowError",
    "JobFailedError",
    "NotFoundError",
    "SchemaVersionError",
    "SqlError",
    "StoreError",
    "UltronError",
    "UnknownNodeError",
    "disk_error",
]
