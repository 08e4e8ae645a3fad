"""Read throughput of a local topic: the ordered ``ultron-topic`` source vs Flink's filesystem
source over the same segment files.

One run writes a topic as dirty as a user's (``--partitions`` partitions of uneven size, up to
``--segments`` JSON-lines segments each of very uneven size, ``--rows`` rows in all, out of time
order inside a segment, repeated ids, missing values), then alternates, for
``--rounds`` rounds, a bounded streaming count in one event-time window (one day) over

* the topic read by ``ultron-topic`` (one split per partition, segments in sequence, the
  watermark pushed into the source), and
* the same files read by the ``filesystem`` connector (a plain watermark after the scan),

in PyFlink's in-process mini cluster with parallelism 2. Figures are the median seconds of the
rounds (wall time from submission to the result), measured side by side; both counts must equal
the rows written. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ultron_nb.engines.flink import connector, ddl  # noqa: E402
from ultron_nb.engines.flink.submit import collect  # noqa: E402
from ultron_nb.engines.topics import LocalTopic  # noqa: E402

#: One event-time window over all the rows: a single, final row when the input ends.
QUERY = """SELECT COUNT(*) AS n FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '1' DAY))
           GROUP BY window_start, window_end"""
SHAPE = ddl.TableShape((("id", "BIGINT"), ("user_id", "STRING"), ("amount", "DOUBLE"),
                        ("ts", "TIMESTAMP(3)")), "ts", "5 s")


def write_topic(root: Path, partitions: int, segments: int, rows: int) -> LocalTopic:
    """A topic as a user's looks: partitions of uneven size (the first holds three shares),
    segments from a handful of rows to several times the mean, rows out of time order inside
    a segment (up to 2 s), repeated ids (a producer's retries) and missing values."""
    topic = LocalTopic(root, partitions, [(n, t) for n, t in SHAPE.columns], "ts").create()
    rng = random.Random(1)
    shares = [3] + [1] * (partitions - 1)
    t0 = datetime(2025, 1, 1)
    n = 0
    for k, share in enumerate(shares):
        budget = rows * share // sum(shares)
        mean = max(1, budget // segments)
        for i in range(segments):
            size = budget if i == segments - 1 else min(budget, rng.randint(1, 3 * mean))
            budget -= size
            batch = []
            for _ in range(size):
                ts = t0 + timedelta(milliseconds=n * 10 + rng.randrange(2000))
                retry = rng.random() < 0.02 and batch
                batch.append({"id": batch[-1]["id"] if retry else n,
                              "user_id": None if rng.random() < 0.05 else f"u{rng.randrange(1000)}",
                              "amount": None if rng.random() < 0.05
                              else round(rng.uniform(1, 100), 2),
                              "ts": ts.isoformat(" ", "milliseconds")})
                n += 1
            if batch:
                topic.append(k, batch)
    return topic


def run(statements: list[str], jar: str) -> tuple[float, int]:
    started = time.perf_counter()
    _, rows = collect(statements, QUERY, limit=10, mode="stream",
                      conf={"pipeline.jars": jar, "parallelism.default": "2"})
    return time.perf_counter() - started, int(rows[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ultron-topic-bench-") as tmp:
        topic = write_topic(Path(tmp) / "t", args.partitions, args.segments, args.rows)
        written = sum(len(s.read_text().splitlines()) for k in range(topic.partitions)
                      for s in topic.segments(k))
        ordered = ddl.topic_source("t", topic.path, SHAPE, mode="bounded").statements
        plain = [ddl.create_table("t", SHAPE, {
            "connector": "filesystem", "path": str(topic.path), "format": "json",
            "json.timestamp-format.standard": "SQL",
            "source.path.regex-pattern": r".*/seg-\d{8}\.jsonl"})]
        jar = connector.connector_jar_url()
        run(ordered, jar)  # warm-up: the JVM, the planner
        run(plain, jar)
        times: dict[str, list[float]] = {"ultron_topic": [], "filesystem": []}
        for _ in range(args.rounds):
            for name, statements in (("ultron_topic", ordered), ("filesystem", plain)):
                seconds, count = run(statements, jar)
                if count != written:
                    raise SystemExit(f"{name}: counted {count} rows, {written} written")
                times[name].append(seconds)
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {"rows": written, "partitions": args.partitions, "segments": args.segments,
              "rounds": args.rounds,
              "ultron_topic_s": round(median["ultron_topic"], 2),
              "filesystem_s": round(median["filesystem"], 2),
              "ultron_topic_rows_per_s": round(written / median["ultron_topic"]),
              "filesystem_rows_per_s": round(written / median["filesystem"]),
              "ratio": round(median["ultron_topic"] / median["filesystem"], 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
