"""The REST client without a cluster: headers, errors, root causes, watermarks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ultron_nb.engines.flink.cluster import free_port
from ultron_nb.engines.flink.rest import FlinkRest, root_cause_line
from ultron_nb.errors import ClusterError, NotFoundError

ROUTES: dict[str, Any] = {
    "/overview": {"taskmanagers": 1, "slots-total": 2, "flink-version": "2.3.0"},
    "/jobs": {"jobs": [{"id": "j1", "status": "RUNNING"}]},
    "/jobs/j1/exceptions": {"exceptionHistory": {"entries": [{
        "exceptionName": "org.apache.flink.runtime.JobException",
        "stacktrace": "org.apache.flink.runtime.JobException: Recovery is suppressed\n"
                      "\tat a.b(C.java:1)\nCaused by: java.io.IOException: disk on fire\n"
                      "\tat d.e(F.java:2)\n"}]}},
    "/jobs/j1/plan": {"plan": {"nodes": [{"id": "src", "parallelism": 2},
                                         {"id": "sink", "parallelism": 2,
                                          "inputs": [{"id": "src"}]}]}},
    # j4: one of the sink's two writers has reported its metrics so far.
    "/jobs/j4/plan": {"plan": {"nodes": [{"id": "sink", "parallelism": 2}]}},
    "/jobs/j4/vertices/sink/metrics": [{"id": "1.StreamingFileWriter.currentInputWatermark"}],
    "/jobs/j1/vertices/sink/metrics": [
        {"id": "0.StreamingFileWriter.currentInputWatermark"},
        {"id": "1.StreamingFileWriter.currentInputWatermark"},
        {"id": "0.IntervalJoin[3].currentInputWatermark"}],
    # j2: just started; the metric store has nothing of its sink vertex yet, while the
    # vertex input watermark (ahead of the join's output by its window) is already there.
    "/jobs/j2/plan": {"plan": {"nodes": [{"id": "src"}, {"id": "sink",
                                                         "inputs": [{"id": "src"}]}]}},
    "/jobs/j2/vertices/sink/metrics": [],
    "/jobs/j2/vertices/sink/watermarks": [{"id": "0.currentInputWatermark",
                                           "value": "9000"}],
    # j3: a last vertex without a writer (e.g. a print sink): its input watermark.
    "/jobs/j3/plan": {"plan": {"nodes": [{"id": "only"}]}},
    "/jobs/j3/vertices/only/metrics": [{"id": "0.Calc[2].currentInputWatermark"},
                                       {"id": "0.currentInputWatermark"}],
    "/jobs/j3/vertices/only/watermarks": [{"id": "0.currentInputWatermark",
                                           "value": "700"}],
}
METRIC_VALUES = [{"id": "0.StreamingFileWriter.currentInputWatermark", "value": "2000"},
                 {"id": "1.StreamingFileWriter.currentInputWatermark", "value": "1500"}]


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []
    asked: list[str] = []

    def do_GET(self) -> None:
        _Handler.seen.append(dict(self.headers))
        _Handler.asked.append(self.path)
        path, _, query = self.path.partition("?")
        if path == "/jobs/j1/vertices/sink/metrics" and query.startswith("get="):
            body: Any = METRIC_VALUES
        elif path == "/jobs/j4/vertices/sink/metrics" and query.startswith("get="):
            body = METRIC_VALUES[1:]
        elif path.startswith(("/jobs/j5/savepoints/", "/jobs/j6/savepoints/")):
            body = _savepoint_status(path.split("/")[2], path.rsplit("/", 1)[1])
        elif path in ("/jobs/j5", "/jobs/j6"):
            body = {"jid": path[6:], "state": "RUNNING", "vertices": []}
        elif path in ROUTES:
            body = ROUTES[path]
        else:
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"errors": ["Not found: " + path]}).encode())
            return
        self._json(body)

    def do_POST(self) -> None:  # a stop with savepoint: refused while tasks deploy
        _Handler.asked.append("POST " + self.path)
        job = self.path.split("/")[2]
        triggers = _STOPS.setdefault(job, [])
        triggers.append(f"t{len(triggers)}")
        self._json({"request-id": triggers[-1]})

    def _json(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


_STOPS: dict[str, list[str]] = {}  # job → the stop triggers asked, in order
NOT_RUNNING = ("org.apache.flink.runtime.checkpoint.CheckpointException: Checkpoint "
               "triggering task Source: UltronTopic (1/1) of job j5 is not being executed at "
               "the moment. Aborting checkpoint. Failure reason: Not all required tasks are "
               "currently running.")


def _savepoint_status(job: str, trigger: str) -> Any:
    """j5 and j6: the first stop is refused (j5: a task deploys; j6: the disk is full)."""
    if trigger == "t0":
        trace = NOT_RUNNING if job == "j5" else "java.io.IOException: No space left on device"
        return {"status": {"id": "COMPLETED"},
                "operation": {"failure-cause": {"stack-trace": trace}}}
    return {"status": {"id": "COMPLETED"}, "operation": {"location": f"file:/sp/{job}"}}


@pytest.fixture(scope="module")
def fake_flink() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_headers_go_with_every_request(fake_flink: str) -> None:
    with FlinkRest(fake_flink + "/", headers={"Authorization": "Bearer t0k"}) as rest:
        assert rest.url == fake_flink
        assert rest.overview()["flink-version"] == "2.3.0"
    assert _Handler.seen[-1].get("Authorization") == "Bearer t0k"


def test_unknown_job_is_not_found_and_errors_are_readable(fake_flink: str) -> None:
    with FlinkRest(fake_flink) as rest:
        with pytest.raises(NotFoundError, match="has no job nope"):
            rest.job("nope")
        with pytest.raises(ClusterError, match=r"404.*Not found: /nothing"):
            rest.get("/nothing")


def test_an_unreachable_url_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with FlinkRest(url, timeout=2) as rest:
        assert not rest.reachable()
        with pytest.raises(ClusterError, match=f"cannot reach Flink at {url}"):
            rest.overview()


def test_root_cause_is_the_deepest_cause(fake_flink: str) -> None:
    with FlinkRest(fake_flink) as rest:
        assert rest.root_cause("j1") == "IOException: disk on fire"
    assert root_cause_line("org.x.Y: top\nCaused by: a.b.Z: deeper") == "Z: deeper"


def test_job_watermark_is_the_minimum_at_the_sink_writer(fake_flink: str) -> None:
    with FlinkRest(fake_flink) as rest:
        assert rest.sink_vertices("j1") == ["sink"]
        assert rest.job_watermark("j1") == 1500


def test_a_jobs_plan_and_writer_metrics_are_asked_once_values_every_time(
    fake_flink: str,
) -> None:
    with FlinkRest(fake_flink) as rest:
        assert rest.job_watermark("j1") == 1500
    _Handler.asked.clear()
    with FlinkRest(fake_flink) as rest:  # a new client (each status makes one)
        assert rest.job_watermark("j1") == 1500
    assert [p.partition("?")[0] for p in _Handler.asked] == ["/jobs/j1/vertices/sink/metrics"]
    assert _Handler.asked[0].partition("?")[2].startswith("get=")
    # A job whose writers have not all reported yet is listed again the next time (a
    # subtask left out would overstate the watermark for the job's whole life).
    _Handler.asked.clear()
    with FlinkRest(fake_flink) as rest:
        assert rest.job_watermark("j2") is None
        assert rest.job_watermark("j2") is None
        assert rest.job_watermark("j4") == 1500
        assert rest.job_watermark("j4") == 1500
    assert _Handler.asked.count("/jobs/j2/vertices/sink/metrics") == 2
    assert _Handler.asked.count("/jobs/j4/vertices/sink/metrics") == 2


def test_job_watermark_is_unknown_until_the_writer_reports_not_the_input(
    fake_flink: str,
) -> None:
    with FlinkRest(fake_flink) as rest:
        assert rest.job_watermark("j2") is None  # never 9000: rows up to it are not out
        assert rest.job_watermark("j3") == 700


def test_a_stop_refused_while_a_task_deploys_is_asked_again(fake_flink: str) -> None:
    """Right after a launch a task may still deploy: Flink refuses the savepoint (the job
    runs on), and the stop is asked again until it is taken; any other refusal is said at
    once."""
    from ultron_nb.errors import JobFailedError

    with FlinkRest(fake_flink) as rest:
        assert rest.stop_with_savepoint("j5", timeout=20) == "file:/sp/j5"
        assert _STOPS["j5"] == ["t0", "t1"]
        with pytest.raises(JobFailedError, match="No space left on device"):
            rest.stop_with_savepoint("j6", timeout=20)
        assert _STOPS["j6"] == ["t0"]
