"""The public API: what each public package exports, and that every exported name exists.

A change here is a change users see: add to the lists on purpose, never by accident."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "ultron_nb": [
        "ControlEdge", "ExperimentStatus", "Flow", "FlowError", "Node", "NotFoundError",
        "Settings", "UltronError", "Workspace", "clone", "define_node", "define_rules",
        "diff", "identities", "latest", "launch", "listen", "load_ipython_extension",
        "load_settings",
        "preview", "quality_report", "restart_node", "resume", "send_event", "sql",
        "status", "stop", "unload_ipython_extension"],
    "ultron_nb.experiments": [
        "ExperimentStatus", "NodeStatus", "Snapshot", "Watcher", "existing_instances",
        "experiment_row",
        "find_member", "launch", "list_experiments", "mask_url", "preview", "restart_node",
        "resume", "sql", "status", "stop", "stop_node", "watch", "watermarks"],
    "ultron_nb.runners": [
        "RUNNERS", "NodeContext", "NodeReport", "NodeRunner", "RunSpec", "Runners",
        "TriggerRef", "runner_class"],
    "ultron_nb.scheduler": [
        "Scheduler", "daemon_status", "main", "run_forever", "start_daemon", "stop_daemon"],
    "ultron_nb.events": [
        "CHANNEL", "DEFAULT_NAMESPACE", "Event", "Listener", "append_event", "decode_value",
        "encode_value", "events_after", "get_event", "last_event_id", "latest", "listen",
        "recent", "send_event"],
    "ultron_nb.errors": [
        "ClusterError", "ConfigError", "CycleError", "DataError", "DiskError",
        "DuplicateNodeError", "EngineError", "FlowError", "JobFailedError", "NotFoundError",
        "SchemaVersionError", "SqlError", "StoreError", "UltronError", "UnknownNodeError",
        "disk_error"],
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_public_names_are_exactly_the_documented_ones(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(PUBLIC[package])
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_importing_the_package_stays_light() -> None:
    """``import ultron_nb`` must not pull the engines in (``%load_ext`` stays fast)."""
    import subprocess
    import sys

    code = ("import sys, ultron_nb; heavy = [m for m in ('duckdb', 'pyflink', 'pandas', "
            "'mlflow', 'sqlalchemy') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
