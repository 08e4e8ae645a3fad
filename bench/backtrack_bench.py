"""Backtracking benchmark: prepare (history -> ordered partitions) and point-in-time joins.

One run measures, on generated data (``--rows`` samples over a week in ``date=/hour=`` Parquet,
unordered inside; ``--versions`` feature versions, 10 per key by default):

- **prepare**: :func:`ultron_nb.services.backtrack.prepare` (checks + hash partitioning + per
  partition event-time order + JSON lines for Flink + manifest + atomic swap) against a plain
  DuckDB ``COPY (SELECT * FROM read_parquet(...) ORDER BY user_id, ts) TO 'x.jsonl'
  (FORMAT json)`` of the same files with the same number of threads;
  ``prepare_vs_duckdb_sort`` = baseline seconds / prepare seconds (>= 0.77 is the target).
- **point in time**: the toolkit's ``FeatureStore.as_of`` (preloaded table, Arrow output)
  against a raw DuckDB ``ASOF LEFT JOIN`` and against the SQL shape of Feast's offline stores
  (entity row id from CONCAT(key, time), inequality join, ``ROW_NUMBER() OVER (PARTITION BY
  row id ORDER BY event_timestamp DESC) = 1``, left join back), all on the same in-memory
  features and the same Arrow samples, all producing Arrow tables.
  ``pit_vs_duckdb_asof`` = raw seconds / toolkit seconds (target >= 0.8),
  ``pit_vs_feast_style`` = Feast-shape seconds / toolkit seconds (target >= 2.5).

Each measurement is repeated (``--repeat`` 3 times for prepare, ``--pit-repeat`` 5 times for
the joins), interleaved with its baselines in rotating order, and the fastest run of each counts
(the machine may be shared). The ratios in the main keys are wall
clock; ``cpu_ratios`` gives the same ratios from process CPU time (all DuckDB threads), which
other load on the machine disturbs less, and ``load_avg`` the 1-minute load at start and end.

``results_equal`` is true when the three PIT results
are equal to each other (order-independent fingerprint of every row over all rows) and each is
equal to a pandas ``merge_asof`` oracle: over all rows when ``--rows`` <= ``--oracle-full``
(1M), otherwise over every sample of ``--oracle-keys`` randomly chosen keys (a point-in-time
join is per key, so the restriction is exact for those keys). ``prepare_ok`` is true when the
prepared topic holds every row and ``check_order`` finds every partition ordered.

The JSON line printed last holds the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WEEK_MS = 7 * 24 * 3600 * 1000
START, END = "2024-01-01", "2024-01-08"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def generate(con: Any, root: Path, rows: int, keys: int, versions_per_key: int) -> None:
    """Samples in date=/hour= Parquet (rows shuffled) and feature versions in Parquet."""
    con.execute(
        f"""COPY (
            WITH b AS (
                SELECT i, TIMESTAMP '{START}' + to_milliseconds(
                    CAST(hash(i, 'ts') % {WEEK_MS} AS BIGINT)) AS ts
                FROM range({rows}) r(i)
            )
            SELECT 'u' || lpad(CAST(hash(i, 'user') % {keys} AS VARCHAR), 7, '0') AS user_id,
                   'i' || CAST(hash(i, 'item') % 5000 AS VARCHAR) AS item_id,
                   ts, CAST(hash(i, 'label') % 7 = 0 AS INTEGER) AS label,
                   (hash(i, 'score') % 1000000) / 1e6 AS score,
                   strftime(ts, '%Y-%m-%d') AS date, strftime(ts, '%H') AS hour
            FROM b ORDER BY hash(i, 'shuffle')
        ) TO ? (FORMAT parquet, PARTITION_BY (date, hour))""",
        [str(root / "samples")],
    )
    slot = WEEK_MS // versions_per_key
    con.execute(
        f"""COPY (
            SELECT 'u' || lpad(CAST(k AS VARCHAR), 7, '0') AS user_id,
                   TIMESTAMP '{START}' + to_milliseconds(CAST(j * {slot} + hash(k, j) % {slot}
                                                              AS BIGINT)) AS version_time,
                   (hash(k, j, 'ctr') % 1000000) / 1e6 AS ctr,
                   CAST(hash(k, j, 'clicks') % 1000 AS BIGINT) AS clicks
            FROM range({keys}) a(k), range({versions_per_key}) b(j)
            ORDER BY hash(k, j)
        ) TO ? (FORMAT parquet)""",
        [str(root / "features.parquet")],
    )


def cpu_seconds() -> float:
    """User + system CPU time of this process (every DuckDB thread included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measured(fn: Any) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds, result) of ``fn()``."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, cpu_seconds() - c0, out


RAW_ASOF = """
SELECT s.*, f.ctr, f.clicks, f.version_time AS user_stats__version_time
FROM samples s ASOF LEFT JOIN feats f ON s.user_id = f.user_id AND s.ts >= f.version_time
"""

# The shape of Feast's MULTIPLE_FEATURE_VIEW_POINT_IN_TIME_JOIN template for one feature view
# with no TTL, deduplicated with ROW_NUMBER as its SQL offline stores do.
FEAST_STYLE = """
WITH entity_dataframe AS (
    SELECT *, ts AS entity_timestamp,
           CONCAT(CAST(user_id AS VARCHAR), CAST(ts AS VARCHAR))
               AS user_stats__entity_row_unique_id
    FROM samples
),
user_stats__entity_dataframe AS (
    SELECT user_id, entity_timestamp, user_stats__entity_row_unique_id
    FROM entity_dataframe
    GROUP BY user_id, entity_timestamp, user_stats__entity_row_unique_id
),
user_stats__subquery AS (
    SELECT version_time AS event_timestamp, user_id, ctr, clicks
    FROM feats
    WHERE version_time <= (SELECT MAX(entity_timestamp) FROM entity_dataframe)
),
user_stats__base AS (
    SELECT subquery.*, entity_dataframe.entity_timestamp,
           entity_dataframe.user_stats__entity_row_unique_id
    FROM user_stats__subquery AS subquery
    INNER JOIN user_stats__entity_dataframe AS entity_dataframe
    ON TRUE
       AND subquery.event_timestamp <= entity_dataframe.entity_timestamp
       AND subquery.user_id = entity_dataframe.user_id
),
user_stats__latest AS (
    SELECT * EXCLUDE (row_number) FROM (
        SELECT *, ROW_NUMBER() OVER (PARTITION BY user_stats__entity_row_unique_id
                                     ORDER BY event_timestamp DESC) AS row_number
        FROM user_stats__base
    ) WHERE row_number = 1
)
SELECT entity_dataframe.* EXCLUDE (entity_timestamp, user_stats__entity_row_unique_id),
       latest.ctr, latest.clicks, latest.event_timestamp AS user_stats__version_time
FROM entity_dataframe
LEFT JOIN user_stats__latest AS latest USING (user_stats__entity_row_unique_id)
"""

FINGERPRINT = """
SELECT count(*), sum(hash(
    user_id, item_id, CAST(ts AS TIMESTAMP), CAST(label AS BIGINT), CAST(score AS DOUBLE),
    CAST(user_stats__version_time AS TIMESTAMP),
    CASE WHEN ctr IS NULL OR isnan(CAST(ctr AS DOUBLE)) THEN NULL ELSE CAST(ctr AS DOUBLE) END,
    CASE WHEN clicks IS NULL OR isnan(CAST(clicks AS DOUBLE)) THEN NULL
         ELSE CAST(clicks AS BIGINT) END))
FROM {table} {where}
"""


def fingerprint(con: Any, data: Any, keys: Any = None) -> tuple[int, int]:
    """Order-independent (rows, sum of row hashes); only the given keys if ``keys``."""
    con.register("__fp", data)
    try:
        where = ""
        if keys is not None:
            con.register("__keys", keys)
            where = "WHERE user_id IN (SELECT user_id FROM __keys)"
        count, total = con.execute(FINGERPRINT.format(table="__fp", where=where)).fetchall()[0]
        return int(count), int(total or 0)
    finally:
        con.unregister("__fp")
        if keys is not None:
            con.unregister("__keys")


def oracle(samples: Any, features: Any) -> Any:
    """pandas merge_asof: the latest version at or before each sample's time, per user."""
    import pandas as pd

    left = samples.sort_values("ts", kind="stable")
    right = features.rename(columns={"version_time": "user_stats__version_time"})
    right = right.assign(__t=right["user_stats__version_time"]).sort_values("__t")
    merged = pd.merge_asof(left, right, left_on="ts", right_on="__t", by="user_id",
                           direction="backward", allow_exact_matches=True)
    return merged.drop(columns="__t")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="samples")
    parser.add_argument("--versions", type=int, default=None,
                        help="feature versions (default rows / 10)")
    parser.add_argument("--per-key", type=int, default=10, help="versions per key")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="prepare repetitions")
    parser.add_argument("--pit-repeat", type=int, default=5, help="PIT repetitions")
    parser.add_argument("--oracle-full", type=int, default=1_000_000)
    parser.add_argument("--oracle-keys", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)

    import duckdb

    from ultron_nb.engines.duckdb.connection import connect
    from ultron_nb.services import backtrack
    from ultron_nb.services.features import open_feature_store

    rows = args.rows
    versions = args.versions or max(rows // 10, args.per_key)
    keys = max(versions // args.per_key, 1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ultron-backtrack-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    threads = os.cpu_count() or 1
    load0 = os.getloadavg()[0]
    log(f"rows={rows} versions={keys * args.per_key} keys={keys} threads={threads} "
        f"duckdb={duckdb.__version__} workdir={work}")
    try:
        con = connect()
        secs, _ = timed(lambda: generate(con, work, rows, keys, args.per_key))
        log(f"generated data in {secs:.1f}s")

        # ------------------------------------------------------------- prepare
        glob = str(work / "samples" / "*" / "*" / "*.parquet")

        def baseline() -> None:
            c = connect()
            try:
                c.execute("COPY (SELECT * FROM read_parquet(?, hive_partitioning = false) "
                          "ORDER BY user_id, ts) TO ? (FORMAT json)",
                          [glob, str(work / "baseline.jsonl")])
            finally:
                c.close()

        def toolkit_prepare() -> Any:
            return backtrack.prepare(work / "samples", key="user_id", time="ts",
                                     partitions=args.partitions, start=START, end=END,
                                     out=work / "topic")

        base_s, prep_s, base_c, prep_c, manifest = [], [], [], [], None
        for i in range(args.repeat):
            # Alternate which one goes first, so neither always meets the same load.
            for which in (("base", "prep") if i % 2 == 0 else ("prep", "base")):
                if which == "base":
                    wall, cpu, _ = measured(baseline)
                    base_s.append(wall)
                    base_c.append(cpu)
                else:
                    wall, cpu, manifest = measured(toolkit_prepare)
                    prep_s.append(wall)
                    prep_c.append(cpu)
            log(f"prepare run {i + 1}: duckdb COPY ORDER BY {base_s[-1]:.2f}s "
                f"(cpu {base_c[-1]:.2f}s), toolkit prepare {prep_s[-1]:.2f}s "
                f"(cpu {prep_c[-1]:.2f}s), load {os.getloadavg()[0]:.1f}")
        (work / "baseline.jsonl").unlink(missing_ok=True)
        secs, order = timed(lambda: backtrack.check_order(work / "topic"))
        prepare_ok = bool(manifest.rows == rows and order.ok
                          and int(order.summary.iloc[0]["rows"]) == rows)
        log(f"check_order over the topic: {secs:.2f}s ok={order.ok} rows={manifest.rows}")
        shutil.rmtree(work / "topic", ignore_errors=True)

        # ------------------------------------------------------------- point in time
        samples = con.sql("SELECT * FROM read_parquet(?, hive_partitioning = false)",
                          params=[glob]).to_arrow_table()
        features = con.sql("SELECT * FROM read_parquet(?)",
                           params=[str(work / "features.parquet")]).to_arrow_table()
        store = open_feature_store(root=work / "features")
        store.write("user_stats", features, "user_id", "version_time")
        secs, _ = timed(lambda: store.preload("user_stats").result())
        log(f"toolkit preload {secs:.2f}s")
        raw = connect()
        raw.execute("CREATE TABLE feats AS SELECT * FROM read_parquet(?)",
                    [str(work / "features.parquet")])
        raw.register("samples", samples)

        results: dict[str, Any] = {}
        times: dict[str, list[float]] = {"toolkit": [], "asof": [], "feast": []}
        cpus: dict[str, list[float]] = {"toolkit": [], "asof": [], "feast": []}
        methods = [
            ("toolkit", lambda: store.as_of("user_stats", samples, "user_id", "ts",
                                            output="arrow")),
            ("asof", lambda: raw.sql(RAW_ASOF).to_arrow_table()),
            ("feast", lambda: raw.sql(FEAST_STYLE).to_arrow_table()),
        ]
        for i in range(args.pit_repeat):
            for name, fn in methods[i % 3:] + methods[: i % 3]:  # rotate who goes first
                results.pop(name, None)
                wall, cpu, out = measured(fn)
                times[name].append(wall)
                cpus[name].append(cpu)
                results[name] = out
            log(f"pit run {i + 1}: toolkit {times['toolkit'][-1]:.2f}s "
                f"(cpu {cpus['toolkit'][-1]:.2f}s), raw ASOF {times['asof'][-1]:.2f}s "
                f"(cpu {cpus['asof'][-1]:.2f}s), Feast shape {times['feast'][-1]:.2f}s "
                f"(cpu {cpus['feast'][-1]:.2f}s), load {os.getloadavg()[0]:.1f}")

        check = connect()
        prints = {name: fingerprint(check, table) for name, table in results.items()}
        equal = len(set(prints.values())) == 1 and prints["toolkit"][0] == rows
        log(f"fingerprints: {prints}")
        import numpy as np
        import pandas as pd

        if rows <= args.oracle_full:
            subset = None
            want = oracle(samples.to_pandas(), features.to_pandas())
        else:
            rng = np.random.default_rng(0)
            all_keys = pd.Series(features.column("user_id").to_pandas().unique())
            subset = pd.DataFrame({"user_id": rng.choice(all_keys, min(args.oracle_keys,
                                                                        len(all_keys)),
                                                         replace=False)})
            check.register("__subset", subset)
            check.register("__s", samples)
            check.register("__f", features)
            s_sub = check.sql("SELECT * FROM __s WHERE user_id IN "
                              "(SELECT user_id FROM __subset)").df()
            f_sub = check.sql("SELECT * FROM __f WHERE user_id IN "
                              "(SELECT user_id FROM __subset)").df()
            want = oracle(s_sub, f_sub)
        want_print = fingerprint(check, want)
        for name, table in results.items():
            got = fingerprint(check, table, subset)
            log(f"oracle check {name}: {got == want_print} ({got[0]} rows compared)")
            equal = equal and got == want_print
        store.close()

        best = {k: min(v) for k, v in times.items()}
        best_cpu = {k: min(v) for k, v in cpus.items()}
        out = {
            "rows": rows,
            "prepare_rows_per_s": round(rows / min(prep_s)),
            "prepare_vs_duckdb_sort": round(min(base_s) / min(prep_s), 3),
            "pit_rows_per_s": round(rows / best["toolkit"]),
            "pit_vs_duckdb_asof": round(best["asof"] / best["toolkit"], 3),
            "pit_vs_feast_style": round(best["feast"] / best["toolkit"], 3),
            "results_equal": bool(equal),
            "prepare_ok": prepare_ok,
            "versions": keys * args.per_key,
            "partitions": args.partitions,
            "threads": threads,
            "seconds": {"prepare": round(min(prep_s), 3), "duckdb_sort": round(min(base_s), 3),
                        "pit": round(best["toolkit"], 3), "duckdb_asof": round(best["asof"], 3),
                        "feast_style": round(best["feast"], 3)},
            "oracle": "full" if rows <= args.oracle_full else f"{args.oracle_keys} keys",
            "cpu_ratios": {
                "prepare_vs_duckdb_sort": round(min(base_c) / min(prep_c), 3),
                "pit_vs_duckdb_asof": round(best_cpu["asof"] / best_cpu["toolkit"], 3),
                "pit_vs_feast_style": round(best_cpu["feast"] / best_cpu["toolkit"], 3),
            },
            "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
        }
        print(json.dumps(out), flush=True)
        return 0
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
