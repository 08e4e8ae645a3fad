"""Tables of the metadata store (SQLAlchemy Core). Bump SCHEMA_VERSION with a migration."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_VERSION = 4

metadata = MetaData()

meta = Table(
    "ultron_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

flows = Table(
    "flows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

flow_versions = Table(
    "flow_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow_id", Integer, ForeignKey("flows.id"), nullable=False),
    Column("version", Integer, nullable=False),
    # The flow's nodes; each node's body is a reference into node_bodies (schema 3).
    Column("spec", JSON, nullable=False),
    Column("change", Text, nullable=False, default=""),  # what this version changed
    Column("created_at", Float, nullable=False),
    UniqueConstraint("flow_id", "version"),
)

# Node bodies (SQL, Python, column lists) by content: stored once however many versions of
# however many flows use them (schema 3).
node_bodies = Table(
    "node_bodies",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("body", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

experiments = Table(
    "experiments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("flow_name", String(64), nullable=False),
    Column("flow_version", Integer, nullable=False),
    Column("params", JSON, nullable=False),
    Column("label", String(128), nullable=False),
    # Flink REST URL the experiment runs on, without credentials (schema 3)
    Column("target", Text, nullable=False),
    Column("state", String(32), nullable=False),
    Column("parent", String(128)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

node_instances = Table(
    "node_instances",
    metadata,
    Column("id", String(96), primary_key=True),  # "<node>_<identity[:12]>"
    Column("identity", String(64), nullable=False),
    Column("target", Text, nullable=False),
    Column("node_name", String(64), nullable=False),
    Column("flow_name", String(64), nullable=False),
    Column("flow_version", Integer, nullable=False),
    Column("params", JSON, nullable=False),
    Column("upstream", JSON, nullable=False),  # {input node name: instance id}
    Column("output", JSON, nullable=False),  # where the output lives (path, topic, ...)
    Column("state", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

experiment_nodes = Table(
    "experiment_nodes",
    metadata,
    Column("experiment_id", Integer, ForeignKey("experiments.id"), primary_key=True),
    Column("node_name", String(64), primary_key=True),
    Column("instance_id", String(96), ForeignKey("node_instances.id"), nullable=False),
    Column("shared_from", String(128)),  # experiment whose instance this reuses
    # When the experiment let go of the instance (its stop); NULL while it holds it. An
    # instance runs while any experiment holds it (reference counting).
    Column("released_at", Float),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance_id", String(96), ForeignKey("node_instances.id"), nullable=False),
    Column("engine", String(16), nullable=False),  # flink | duckdb | python
    Column("external_id", String(128)),  # Flink job id, process id, ...
    Column("target", Text, nullable=False),
    Column("state", String(32), nullable=False),
    Column("attempt", Integer, nullable=False, default=1),
    Column("savepoint", Text),
    Column("error", Text),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("trigger_id", Integer),  # the trigger a scheduler-run node's run carried out
)
Index("ix_jobs_instance", jobs.c.instance_id)

# Every savepoint a Flink job took (schema 4): who took it, from which state it had started
# (``parent``: the savepoint its job restored; NULL for a fresh start), and the operators
# whose state it holds (their uids and state shapes, for the check before a restore).
savepoints = Table(
    "savepoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("location", Text, nullable=False),
    Column("experiment", String(128), nullable=False),
    Column("node_name", String(64), nullable=False),
    Column("instance_id", String(96), ForeignKey("node_instances.id"), nullable=False),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("flow_name", String(64), nullable=False),
    Column("flow_version", Integer, nullable=False),
    Column("parent", Integer),
    Column("operators", JSON),  # NULL when not known (taken before schema 4)
    Column("created_at", Float, nullable=False),
)
Index("ix_savepoints_experiment", savepoints.c.experiment)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),  # global order
    Column("namespace", String(128), nullable=False),
    Column("key", String(255), nullable=False),
    Column("value", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("sender", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("namespace", "key", "version"),
)
Index("ix_events_key", events.c.namespace, events.c.key)

event_versions = Table(
    "event_versions",
    metadata,
    Column("namespace", String(128), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("version", Integer, nullable=False),
)

scheduler_state = Table(
    "scheduler_state",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)

trigger_log = Table(
    "trigger_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("experiment", String(128), nullable=False),
    Column("node_name", String(64), nullable=False),
    Column("edge", String(255), nullable=False),
    Column("occurrence", String(255), nullable=False),  # what fired it (event version, ...)
    Column("action", String(16), nullable=False),
    # pending | claimed (being carried out) | done | cancelled | failed | suspended (by a
    # stop with savepoints: pending again on resume)
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("experiment", "node_name", "edge", "occurrence"),
)
