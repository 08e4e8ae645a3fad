"""A plain MLflow client in a process of its own, driven by JSON lines on stdin.

Nothing of ultron_nb is imported: this is "any MLflow client" registering versions and
moving aliases. Each command gets one JSON line back (``t``: epoch seconds once the
registry committed it). ``pending`` creates a version in PENDING_REGISTRATION through the
SQL store's own ORM models (MLflow's SQL store creates versions READY; other registries
register asynchronously); ``finish`` turns it READY (or FAILED_REGISTRATION).

    python tests/support/registry_client.py TRACKING_URI ARTIFACT_DIR
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from mlflow import MlflowClient


def _model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name)
    except Exception as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise


def main() -> None:
    uri, artifacts = sys.argv[1], sys.argv[2]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("foreign")
    exp_id = exp.experiment_id if exp else client.create_experiment(
        "foreign", artifact_location=artifacts)
    store = None
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        cmd: dict[str, Any] = json.loads(line)
        op = cmd["op"]
        out: dict[str, Any] = {}
        if op == "quit":
            break
        if op == "register":
            _model(client, cmd["name"])
            run = client.create_run(exp_id)
            for key, value in cmd.get("metrics", {}).items():
                client.log_metric(run.info.run_id, key, float(value))
            version = client.create_model_version(
                cmd["name"], f"{artifacts}/{run.info.run_id}/model", run_id=run.info.run_id,
                tags=cmd.get("tags") or None)
            out = {"version": int(version.version), "run_id": run.info.run_id,
                   "status": version.status}
        elif op == "alias":
            client.set_registered_model_alias(cmd["name"], cmd["alias"], str(cmd["version"]))
        elif op == "delete_alias":
            client.delete_registered_model_alias(cmd["name"], cmd["alias"])
        elif op in ("pending", "finish"):
            from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
            from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

            store = store or SqlAlchemyStore(uri)
            if op == "pending":
                _model(client, cmd["name"])
                number = 1 + max((int(v.version) for v in client.search_model_versions(
                    f"name = '{cmd['name']}'")), default=0)
                now = int(time.time() * 1000)
                with store.ManagedSessionMaker(read_only=False) as session:
                    session.add(store._with_workspace_field(SqlModelVersion(
                        name=cmd["name"], version=number, creation_time=now,
                        last_updated_time=now, source=f"{artifacts}/pending-{number}",
                        status="PENDING_REGISTRATION")))
                out = {"version": number}
            else:
                with store.ManagedSessionMaker(read_only=False) as session:
                    session.query(SqlModelVersion).filter(
                        SqlModelVersion.name == cmd["name"],
                        SqlModelVersion.version == int(cmd["version"]),
                    ).update({"status": cmd.get("status", "READY")})
        out["t"] = time.time()
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
