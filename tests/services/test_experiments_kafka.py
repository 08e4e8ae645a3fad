"""A Kafka resource in a flow: launched through ``experiments.launch`` like any topic."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.tansu import (
    TansuBroker,
    create_topic,
    produce_json,
    tansu_broker,  # noqa: F401  (fixture)
)
from ultron_nb import experiments as ex
from ultron_nb.flow.build import define_node
from ultron_nb.services.datagen import format_ts

from .flink_flows import wait_for, watermark_at_least

pytestmark = [pytest.mark.flink, pytest.mark.slow]

PER_MINUTE = """
SELECT window_start, COUNT(*) AS plays, SUM(seconds) AS seconds
FROM TABLE(TUMBLE(TABLE plays, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end
"""


def test_a_stream_node_reads_a_kafka_topic(flink_workspace: Any,
                                           tansu_broker: TansuBroker) -> None:  # noqa: F811
    ws = flink_workspace
    create_topic(tansu_broker.bootstrap, "plays", partitions=2)
    start = 1_735_689_600_000  # 2025-01-01 00:00:00
    records = [{"user": i % 7, "seconds": i % 5, "ts": format_ts(start + i * 500)}
               for i in range(600)]  # 5 minutes, two plays a second
    produce_json(tansu_broker.bootstrap, "plays", records,
                 partition=lambda r: int(r["user"]) % 2)
    ws.define("k", define_node("plays", "user INT, seconds INT, ts TIMESTAMP(3)", kind="kafka",
                               time="ts", watermark="2 s",
                               options={"topic": "plays",
                                        "bootstrap.servers": tansu_broker.bootstrap,
                                        "group.id": "ultron-test"}))
    ws.define("k", define_node("per_minute", PER_MINUTE,
                               options={"checkpoint_interval": "1 s"}))
    st = ex.launch(ws, "k", name="kafka")
    assert st["per_minute"].state == "running"
    wait_for(watermark_at_least(ws, "kafka", "per_minute", "2025-01-01 00:04:00"))
    frames = wait_for(lambda: [f] if len(f := ex.preview(ws, "per_minute", limit=100)) >= 4
                      else None)
    out = frames[0].sort_values("window_start").head(4)
    assert list(out.plays) == [120, 120, 120, 120]  # every record, none dropped as late
    assert list(out.seconds) == [240, 240, 240, 240]
    ex.stop(ws, "kafka")


def test_a_stream_node_reads_only_what_producers_committed(
        flink_workspace: Any, tansu_broker: TansuBroker) -> None:  # noqa: F811
    """A transactional producer's open transaction is not read (the default isolation level
    of a kafka resource is read_committed): the counts are those of the committed plays."""
    from confluent_kafka import Producer

    ws = flink_workspace
    create_topic(tansu_broker.bootstrap, "txn_plays", partitions=1)
    start = 1_735_689_600_000  # 2025-01-01 00:00:00
    producer = Producer({"bootstrap.servers": tansu_broker.bootstrap,
                         "transactional.id": "ultron-test-plays", "log_level": 3})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(600):  # 5 minutes, two plays a second, committed
        producer.produce("txn_plays", json.dumps(
            {"user": i % 7, "seconds": i % 5, "ts": format_ts(start + i * 500)}).encode())
    producer.commit_transaction(30)
    producer.begin_transaction()  # 50 more plays in minute 1, never committed
    for i in range(50):
        producer.produce("txn_plays", json.dumps(
            {"user": 1, "seconds": 9, "ts": format_ts(start + 60_000 + i * 100)}).encode())
    producer.flush(30)
    ws.define("t", define_node("txn_plays", "user INT, seconds INT, ts TIMESTAMP(3)",
                               kind="kafka", time="ts", watermark="2 s",
                               options={"topic": "txn_plays",
                                        "bootstrap.servers": tansu_broker.bootstrap}))
    ws.define("t", define_node("per_minute", PER_MINUTE.replace("TABLE plays", "TABLE txn_plays"),
                               options={"checkpoint_interval": "1 s"}))
    ex.launch(ws, "t", name="txn")
    wait_for(watermark_at_least(ws, "txn", "per_minute", "2025-01-01 00:04:00"))
    frames = wait_for(lambda: [f] if len(f := ex.preview(ws, "per_minute", experiment="txn",
                                                           limit=100)) >= 4 else None)
    out = frames[0].sort_values("window_start").head(4)
    assert list(out.plays) == [120, 120, 120, 120]  # not 170 in minute 1
    assert list(out.seconds) == [240, 240, 240, 240]
    ex.stop(ws, "txn")
    producer.abort_transaction(30)
