"""Compiling and submitting SQL jobs through PyFlink: validation first, the right cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ultron_nb.engines.flink import ddl
from ultron_nb.engines.flink.rest import FlinkRest
from ultron_nb.engines.flink.submit import (
    JobSpec,
    collect,
    compile_job,
    planner_message,
    prepare,
    submit,
    target_configuration,
)
from ultron_nb.errors import ConfigError, SqlError


class _Err(Exception):
    __module__ = "py4j.protocol"


def test_planner_message_keeps_the_line_that_points_into_the_sql() -> None:
    exc = _Err("An error occurred while calling o8.sqlQuery.\n: org.apache.flink.table.api."
               "ValidationException: SQL validation failed. From line 3, column 8 to line 3, "
               "column 10: Column 'foo' not found in any table\n\tat org.apache.X(X.java:1)\n")
    assert planner_message(exc) == ("From line 3, column 8 to line 3, column 10: Column 'foo' "
                                    "not found in any table")
    assert "From line 2, column 8 to line 2" in planner_message(exc, line_offset=1)


def test_planner_message_prefers_the_root_cause_otherwise() -> None:
    exc = _Err("org.apache.flink.table.api.ValidationException: Unable to create a source\n"
               "\tat a.b(C.java:1)\nCaused by: org.apache.flink.table.api.ValidationException: "
               "Could not find any factory for identifier 'kafka'\n\tat x.y(Z.java:2)")
    assert planner_message(exc) == ("ValidationException: Could not find any factory for "
                                    "identifier 'kafka'")


def test_target_configuration() -> None:
    conf = target_configuration("https://flink.example.com:8443/prefix/")
    assert conf == {"execution.target": "remote", "rest.address": "flink.example.com",
                    "rest.port": "8443", "rest.url-prefix": "/prefix",
                    "security.ssl.rest.enabled": "true"}
    assert target_configuration("http://127.0.0.1:8081")["rest.port"] == "8081"
    with pytest.raises(ConfigError):
        target_configuration("http://")


def _spec(tmp_path: Path, query: str, cluster: Any, rows: int = 5) -> JobSpec:
    data = tmp_path / "in"
    data.mkdir(exist_ok=True)
    (data / "a.json").write_text("".join(
        json.dumps({"id": i, "ts": f"2025-01-01 00:00:{i:02d}.000"}) + "\n" for i in range(rows)))
    shape = ddl.TableShape((("id", "BIGINT"), ("ts", "TIMESTAMP(3)")), "ts", "1 s")
    conf = target_configuration(cluster.url)
    conf["parallelism.default"] = "1"
    return JobSpec(node="n1", mode="stream",
                   statements=ddl.dataset_source("src", data, shape).statements,
                   query=query, sink_name="__sink", config=conf)


def _sink(tmp_path: Path) -> Any:
    return lambda columns, spec: ddl.sink_table(spec.sink_name, tmp_path / "out", columns)


@pytest.mark.flink
def test_invalid_sql_is_caught_before_submission_with_the_node_name(
    tmp_path: Path, flink_cluster: Any,
) -> None:
    with FlinkRest(flink_cluster.url) as rest:
        before = set(rest.job_ids())
        spec = _spec(tmp_path, "SELECT id,\n       nope\nFROM src", flink_cluster)
        with pytest.raises(SqlError) as info:
            compile_job(spec, _sink(tmp_path))
        assert str(info.value) == ("node 'n1': From line 2, column 8 to line 2, column 11: "
                                   "Column 'nope' not found in any table")
        with pytest.raises(SqlError, match="node 'n1': SQL parse error: Encountered"):
            compile_job(_spec(tmp_path, "SELECT id FORM src", flink_cluster), _sink(tmp_path))
        # An updating query cannot go to an append-only topic: caught by the optimizer.
        with pytest.raises(SqlError, match="doesn't support consuming update changes"):
            compile_job(_spec(tmp_path, "SELECT id, COUNT(*) AS n FROM src GROUP BY id",
                              flink_cluster), _sink(tmp_path))
        assert set(rest.job_ids()) == before  # nothing was submitted


@pytest.mark.flink
def test_a_job_lands_on_the_target_cluster(tmp_path: Path, flink_cluster: Any) -> None:
    spec = _spec(tmp_path, "SELECT id * 10 AS x, ts FROM src", flink_cluster)
    job = compile_job(spec, _sink(tmp_path))
    assert job.columns == [("x", "BIGINT"), ("ts", "TIMESTAMP(3) *ROWTIME*")]
    with FlinkRest(flink_cluster.url) as rest:
        job_id = submit(job, rest)
        assert job_id in rest.job_ids()
        assert rest.await_state(job_id, {"finished"}, 60) == "finished"
    rows = [json.loads(x) for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")
            for x in p.read_text().splitlines()]
    assert sorted(r["x"] for r in rows) == [0, 10, 20, 30, 40]


@pytest.mark.flink
def test_collect_runs_a_bounded_query_in_process(tmp_path: Path, flink_cluster: Any) -> None:
    spec = _spec(tmp_path, "", flink_cluster, rows=30)
    columns, rows = collect(spec.statements, "SELECT id FROM src WHERE id >= 10", limit=7)
    assert columns == ["id"] and len(rows) == 7


@pytest.mark.flink
def test_a_stream_job_runs_its_compiled_plan_and_a_stored_spec_runs_the_same_one(
    tmp_path: Path, flink_cluster: Any,
) -> None:
    """What a resume relies on: the stored spec carries the compiled plan, and a job prepared
    from it (a resume, in a new environment) has the same operator ids as the first job, so
    its state maps back. A batch job has no plan (it is planned again when it runs)."""
    spec = _spec(tmp_path, "SELECT id * 10 AS x, ts FROM src", flink_cluster)
    job = compile_job(spec, _sink(tmp_path))
    assert job.plan is not None and "nodes" in json.loads(spec.plan or "{}")
    stored = JobSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert stored.plan == spec.plan
    with FlinkRest(flink_cluster.url) as rest:
        first = submit(job, rest, name="plan-first")
        again = submit(prepare(stored), rest, name="plan-again")
        for job_id in (first, again):
            assert rest.await_state(job_id, {"finished"}, 60) == "finished"
        names = {j.id: j.name for j in rest.jobs()}
        assert (names[first], names[again]) == ("plan-first", "plan-again")
        vertices = [sorted(v["id"] for v in rest.plan(j)) for j in (first, again)]
    assert vertices[0] == vertices[1] and vertices[0]
    batch = _spec(tmp_path, "SELECT id FROM src", flink_cluster)
    batch.mode = "batch"
    assert compile_job(batch, _sink(tmp_path / "b")).plan is None and batch.plan is None
