"""Backtracking benchmark: prepare (history -> ordered partitions) and point-in-time lookups.

Figures are medians of ``--repeat`` runs (3; the end-to-end children ``--e2e-repeat``, 5: a
fresh process's timings vary most), each run measuring the toolkit and its baseline side by
side (alternating who goes first); ``spread`` gives (min, max) of every timing. Data are
dirty on purpose, generated per configuration (``--per-key``: 10 and 100 versions per key):

- samples (``--rows``, 1M): 0.5% null keys, 10% keys that have no features, some before their
  key's first version, ties with version times (whole milliseconds);
- feature versions (``--versions``, 1M) with an ingest (created) time, in ``--writes`` (3)
  Parquet files, one per feature-job run in time order; each later file restates 5% of the
  previous file's versions with a later ingest time; 1% of the versions of every file come
  three times with the same ingest time (the later row wins); 0.1% of the rows have a NULL key.

Measured:

- **lookup**: ``store.as_of`` on a loaded store (Arrow out) against a raw DuckDB ``ASOF LEFT
  JOIN`` with read-time dedupe (``QUALIFY row_number() OVER (PARTITION BY key, version time
  ORDER BY ingest DESC, file DESC, row DESC) = 1``) over the same rows already in a DuckDB
  table, same Arrow samples, Arrow out: ``lookup_vs_raw_asof`` = raw seconds / toolkit seconds.
- **end to end**, as a user calls it, each run in a fresh child process (so that ``rss_mb`` is
  the peak RSS of that path alone): the toolkit writes every file through the store, preloads
  and looks the samples (a DataFrame) up into a DataFrame; the raw path runs the same ASOF JOIN
  with read-time dedupe straight over the same Parquet files into a DataFrame.
  ``end_to_end_vs_raw_asof`` = raw seconds / toolkit seconds.
- **known time**: ``store.as_of(..., known_at="ts")`` (versions ingested after the sample's
  time are invisible), checked against its own inequality-join oracle (``known_time``).
- **prepare**: ``backtrack.prepare`` (checks, hash partitions, per-partition event-time order,
  JSON lines, manifest, atomic swap; null keys routed) on the samples as ``date=/hour=`` history
  against a plain DuckDB ``COPY (SELECT * ... ORDER BY user_id, ts) TO ... (FORMAT json)``:
  ``prepare_vs_duckdb_sort`` = baseline seconds / prepare seconds.

Correctness: every output row of the toolkit's lookup (and of the raw join) is compared with an
independent oracle, a hand-written SQL inequality join (versions resolved with ``arg_max`` by
ingest, file, row; then the latest version time ``<=`` the sample time, by ``max``) — no ASOF
join and none of the code under test. ``dropped``: samples missing from the output; ``wrong``:
rows out of input order or with any value different from the oracle's. The end-to-end child's
result is compared with the in-process lookup by an order-sensitive fingerprint.

The JSON line printed last is ``{"v10": {...}, "v100": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WEEK_MS = 7 * 24 * 3600 * 1000
START, END = "2024-01-01", "2024-01-08"
HERE = Path(__file__).resolve()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(fn: Any) -> tuple[float, float, Any]:
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, cpu_seconds() - c0, out


# ----------------------------------------------------------------------------- data
def generate_samples(con: Any, path: Path, rows: int, keys: int) -> None:
    con.execute(
        f"""COPY (
            SELECT i AS rid,
                   CASE WHEN hash(i, 'null') % 200 = 0 THEN NULL ELSE 'u' || lpad(CAST(
                       hash(i, 'user') % {keys + keys // 10} AS VARCHAR), 7, '0') END AS user_id,
                   'i' || CAST(hash(i, 'item') % 5000 AS VARCHAR) AS item_id,
                   TIMESTAMP '{START}' + to_milliseconds(CAST(hash(i, 'ts') % {WEEK_MS}
                                                              AS BIGINT)) AS ts,
                   CAST(hash(i, 'label') % 7 = 0 AS INTEGER) AS label,
                   (hash(i, 'score') % 1000000) / 1e6 AS score
            FROM range({rows}) r(i) ORDER BY i
        ) TO ? (FORMAT parquet)""", [str(path)])


def generate_features(con: Any, folder: Path, keys: int, per_key: int, writes: int
                      ) -> list[str]:
    """``writes`` Parquet files of dirty versions (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    slot = WEEK_MS // per_key
    con.execute(f"""CREATE OR REPLACE TEMP TABLE base AS
        SELECT 'u' || lpad(CAST(k AS VARCHAR), 7, '0') AS user_id, k, j,
               TIMESTAMP '{START}' + to_milliseconds(CAST(j * {slot} + hash(k, j) % {slot}
                                                          AS BIGINT)) AS version_time,
               (hash(k, j, 'ctr') % 1000000) / 1e6 AS ctr,
               CAST(hash(k, j, 'clicks') % 1000 AS BIGINT) AS clicks,
               CAST(j * {writes} // {per_key} AS INTEGER) AS w
        FROM range({keys}) a(k), range({per_key}) b(j)""")
    files = []
    for w in range(writes):
        path = folder / f"w{w:02d}.parquet"
        con.execute(f"""COPY (
            WITH mine AS (
                SELECT *, version_time + to_milliseconds(3600000 + hash(k, j, 'lag') % 3600000)
                       AS ingest, 0 AS copy FROM base WHERE w = {w}
            ), restated AS (  -- 5% of the previous run's versions, learnt a day later
                SELECT * REPLACE (ctr + 1 AS ctr), version_time + INTERVAL 1 DAY AS ingest,
                       0 AS copy FROM base WHERE w = {w - 1} AND hash(k, j, 're') % 20 = 0
            ), tripled AS (  -- 1% sent three times with the same ingest time
                SELECT m.* EXCLUDE (copy) REPLACE (m.ctr + c.n AS ctr), c.n AS copy FROM mine m,
                       range(1, 3) c(n) WHERE hash(m.k, m.j, 'dup') % 100 = 0
            ), rows AS (SELECT * FROM mine UNION ALL SELECT * FROM restated
                        UNION ALL SELECT * FROM tripled)
            SELECT CASE WHEN hash(k, j, copy, 'nk') % 1000 = 0 THEN NULL ELSE user_id END
                       AS user_id, version_time, ingest, ctr, clicks
            FROM rows ORDER BY hash(k, j, 'shuffle'), copy
        ) TO ? (FORMAT parquet)""", [str(path)])
        files.append(str(path))
    return files


def write_history(con: Any, samples: Path, root: Path) -> None:
    con.execute("""COPY (SELECT *, strftime(ts, '%Y-%m-%d') AS date, strftime(ts, '%H') AS hour
                          FROM read_parquet(?) ORDER BY hash(rid, 'shuffle'))
                    TO ? (FORMAT parquet, PARTITION_BY (date, hour))""",
                [str(samples), str(root)])


# ----------------------------------------------------------------------------- SQL
DEDUPED = """(SELECT * FROM {feats} QUALIFY row_number() OVER (PARTITION BY user_id,
              version_time ORDER BY ingest DESC, filename DESC, file_row_number DESC) = 1)"""
RAW_ASOF = """
SELECT s.*, f.ctr, f.clicks, f.version_time AS user_stats__version_time,
       f.ingest AS user_stats__ingest_time
FROM samples s ASOF LEFT JOIN {deduped} f
  ON s.user_id = f.user_id AND s.ts >= f.version_time
"""
SCAN = "read_parquet(?, filename = true, file_row_number = true)"

# The oracle: no ASOF join. Resolve each (key, version time) by arg_max, then take the latest
# version time <= the sample time with an inequality join and max.
ORACLE = f"""
WITH best AS (
    SELECT user_id, version_time,
           arg_max(ctr, (ingest, filename, file_row_number)) AS ctr,
           arg_max(clicks, (ingest, filename, file_row_number)) AS clicks,
           max(ingest) AS ingest
    FROM {SCAN} WHERE user_id IS NOT NULL GROUP BY user_id, version_time
), chosen AS (
    SELECT s.rid, max(b.version_time) AS version_time
    FROM samples s JOIN best b ON b.user_id = s.user_id AND b.version_time <= s.ts
    GROUP BY s.rid
)
SELECT s.rid, c.version_time, b.ctr, b.clicks, b.ingest
FROM samples s LEFT JOIN chosen c ON c.rid = s.rid
LEFT JOIN best b ON b.user_id = s.user_id AND b.version_time = c.version_time
"""

# Known-time mode (known_at = the sample's own time): of the versions with version time and
# ingest time both <= the sample time, the latest by (version time, ingest, file, row).
ORACLE_KNOWN = f"""
WITH v AS (SELECT * FROM {SCAN} WHERE user_id IS NOT NULL), picked AS (
    SELECT s.rid,
           arg_max(v.version_time, (v.version_time, v.ingest, v.filename, v.file_row_number))
               AS version_time,
           arg_max(v.ctr, (v.version_time, v.ingest, v.filename, v.file_row_number)) AS ctr,
           arg_max(v.clicks, (v.version_time, v.ingest, v.filename, v.file_row_number))
               AS clicks,
           arg_max(v.ingest, (v.version_time, v.ingest, v.filename, v.file_row_number))
               AS ingest
    FROM samples s JOIN v ON v.user_id = s.user_id AND v.version_time <= s.ts
                          AND v.ingest <= s.ts
    GROUP BY s.rid
)
SELECT s.rid, p.version_time, p.ctr, p.clicks, p.ingest
FROM samples s LEFT JOIN picked p ON p.rid = s.rid
"""

COMPARE = """
SELECT count(*) FILTER (WHERE g.rid IS NULL) AS dropped,
       count(*) FILTER (WHERE g.rid IS NOT NULL AND (
           ({ordered} AND g.__pos <> g.rid)
           OR CAST(g.user_stats__version_time AS TIMESTAMP) IS DISTINCT FROM o.version_time
           OR CAST(g.user_stats__ingest_time AS TIMESTAMP) IS DISTINCT FROM o.ingest
           OR g.ctr IS DISTINCT FROM o.ctr OR CAST(g.clicks AS BIGINT) IS DISTINCT FROM o.clicks
       )) AS wrong,
       (SELECT count(*) FROM got) - (SELECT count(DISTINCT rid) FROM got) AS extra
FROM oracle o LEFT JOIN got g ON g.rid = o.rid
"""

FINGERPRINT = """
SELECT count(*), sum(hash(__pos, rid, CAST(user_stats__version_time AS TIMESTAMP), ctr,
                          CAST(clicks AS BIGINT)) % 1000000007) FROM fp
"""


def compare(con: Any, oracle: Any, got: Any, *, ordered: bool) -> dict[str, int]:
    import numpy as np
    import pyarrow as pa

    if isinstance(got, pa.Table):
        got = got.append_column("__pos", pa.array(np.arange(got.num_rows)))
    con.register("oracle", oracle)
    con.register("got", got)
    try:
        dropped, wrong, extra = con.execute(COMPARE.format(
            ordered="true" if ordered else "false")).fetchall()[0]
    finally:
        con.unregister("oracle")
        con.unregister("got")
    return {"dropped": int(dropped), "wrong": int(wrong), "extra": int(extra)}


def fingerprint(con: Any, frame: Any) -> list[int]:
    import numpy as np

    con.register("fp", frame.assign(__pos=np.arange(len(frame))))
    try:
        return [int(x or 0) for x in con.execute(FINGERPRINT).fetchall()[0]]
    finally:
        con.unregister("fp")


# ----------------------------------------------------------------------------- children
def child(mode: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One end-to-end run in this (fresh) process; timing starts after the imports."""
    import duckdb
    import pandas as pd

    from ultron_nb.engines.duckdb.connection import connect

    samples = pd.read_parquet(spec["samples"])
    c0, t0 = cpu_seconds(), time.perf_counter()
    if mode == "toolkit":
        from ultron_nb.services.features import open_feature_store

        with open_feature_store(root=spec["store"]) as store:
            for path in spec["files"]:
                store.write("user_stats", path, "user_id", "version_time", ingest_time="ingest",
                            null_keys="drop")
            store.preload("user_stats").result()
            out = store.as_of("user_stats", samples, time="ts")
    else:
        con = connect()
        con.register("samples", samples)
        sql = RAW_ASOF.format(deduped=DEDUPED.format(feats=SCAN))
        out = con.sql(sql, params=[spec["files"]]).df()
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    rss = peak_rss_mb()
    prints = fingerprint(duckdb.connect(), out) if mode == "toolkit" else None
    return {"seconds": seconds, "cpu": cpu, "rss_mb": rss, "rows": len(out),
            "fingerprint": prints}


def peak_rss_mb() -> float:
    """This process's peak RSS since it started (VmHWM: ``ru_maxrss`` would include the
    parent's pages at fork time)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(mode: str, spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(HERE), "--child", mode, json.dumps(spec)],
                          capture_output=True, text=True, check=False, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"child {mode} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- measurements
def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> list[float]:
    return [round(min(values), 3), round(max(values), 3)]


def alternate(repeat: int, pairs: list[tuple[str, Any]], label: str
              ) -> dict[str, dict[str, list[Any]]]:
    """Run each (name, fn) ``repeat`` times, rotating who goes first."""
    out: dict[str, dict[str, list[Any]]] = {n: {"wall": [], "cpu": [], "out": []}
                                            for n, _ in pairs}
    for i in range(repeat):
        order = pairs[i % len(pairs):] + pairs[: i % len(pairs)]
        for name, fn in order:
            wall, cpu, result = fn()
            out[name]["wall"].append(wall)
            out[name]["cpu"].append(cpu)
            out[name]["out"] = [result]  # keep the last result only
        log(f"{label} run {i + 1}: " + ", ".join(
            f"{n} {out[n]['wall'][-1]:.2f}s (cpu {out[n]['cpu'][-1]:.2f}s)" for n, _ in pairs)
            + f", load {os.getloadavg()[0]:.1f}")
    return out


def bench_prepare(work: Path, samples: Path, partitions: int, repeat: int) -> dict[str, Any]:
    from ultron_nb.engines.duckdb.connection import connect
    from ultron_nb.services import backtrack

    con = connect()
    write_history(con, samples, work / "history")
    glob = str(work / "history" / "*" / "*" / "*.parquet")

    def baseline() -> tuple[float, float, Any]:
        def go() -> None:
            c = connect()
            try:
                c.execute("COPY (SELECT * FROM read_parquet(?, hive_partitioning = false) "
                          "ORDER BY user_id, ts) TO ? (FORMAT json)",
                          [glob, str(work / "baseline.jsonl")])
            finally:
                c.close()
        return measured(go)

    def toolkit() -> tuple[float, float, Any]:
        return measured(lambda: backtrack.prepare(
            work / "history", key="user_id", time="ts", partitions=partitions, start=START,
            end=END, out=work / "topic", null_keys="route"))

    runs = alternate(repeat, [("sort", baseline), ("prepare", toolkit)], "prepare")
    manifest = runs["prepare"]["out"][0]
    order = backtrack.check_order(work / "topic")
    rows = int(con.execute("SELECT count(*) FROM read_parquet(?)", [str(samples)]).fetchall()
               [0][0])
    ok = manifest.rows + manifest.null_keys == rows and order.ok
    shutil.rmtree(work / "topic", ignore_errors=True)
    (work / "baseline.jsonl").unlink(missing_ok=True)
    return {"prepare_vs_duckdb_sort": round(median(runs["sort"]["wall"])
                                            / median(runs["prepare"]["wall"]), 3),
            "prepare_ok": bool(ok), "prepare_null_keys_routed": manifest.null_keys,
            "prepare_seconds": {"prepare": round(median(runs["prepare"]["wall"]), 3),
                                "duckdb_sort": round(median(runs["sort"]["wall"]), 3)},
            "prepare_spread": {"prepare": spread(runs["prepare"]["wall"]),
                               "duckdb_sort": spread(runs["sort"]["wall"])},
            "prepare_cpu_ratio": round(median(runs["sort"]["cpu"])
                                       / median(runs["prepare"]["cpu"]), 3)}


def bench_lookup(work: Path, rows: int, versions: int, per_key: int, writes: int,
                 repeat: int, e2e_repeat: int) -> dict[str, Any]:
    from ultron_nb.engines.duckdb.connection import connect
    from ultron_nb.services.features import open_feature_store

    keys = max(versions // per_key, 1)
    con = connect()
    samples_path = work / f"samples_v{per_key}.parquet"
    generate_samples(con, samples_path, rows, keys)
    files = generate_features(con, work / f"features_v{per_key}", keys, per_key, writes)
    samples = con.sql("SELECT * FROM read_parquet(?)", params=[str(samples_path)]
                      ).to_arrow_table()
    store = open_feature_store(root=work / f"store_v{per_key}")
    write_stats = [store.write("user_stats", f, "user_id", "version_time",
                               ingest_time="ingest", null_keys="drop") for f in files]
    store.preload("user_stats").result()
    raw = connect()
    raw.execute(f"CREATE TABLE feats AS SELECT * FROM {SCAN}", [files])
    raw.register("samples", samples)
    raw_sql = RAW_ASOF.format(deduped=DEDUPED.format(feats="feats"))
    runs = alternate(repeat, [
        ("lookup", lambda: measured(lambda: store.as_of("user_stats", samples, time="ts",
                                                        output="arrow"))),
        ("raw_asof", lambda: measured(lambda: raw.sql(raw_sql).to_arrow_table())),
        ("known_time", lambda: measured(lambda: store.as_of(
            "user_stats", samples, time="ts", known_at="ts", output="arrow"))),
    ], f"v{per_key} lookup")
    spec = {"samples": str(samples_path), "files": files}
    e2e: dict[str, list[dict[str, Any]]] = {"toolkit": [], "raw": []}
    for i in range(e2e_repeat):
        for mode in (("toolkit", "raw") if i % 2 == 0 else ("raw", "toolkit")):
            store_dir = work / f"e2e_store_{per_key}_{i}"
            e2e[mode].append(run_child(mode, {**spec, "store": str(store_dir)}))
            shutil.rmtree(store_dir, ignore_errors=True)
        log(f"v{per_key} end to end run {i + 1}: toolkit {e2e['toolkit'][-1]['seconds']:.2f}s "
            f"rss {e2e['toolkit'][-1]['rss_mb']:.0f} MB, raw {e2e['raw'][-1]['seconds']:.2f}s "
            f"rss {e2e['raw'][-1]['rss_mb']:.0f} MB")
    oracle_con = connect()
    oracle_con.register("samples", samples)
    t0 = time.perf_counter()
    oracle = oracle_con.sql(ORACLE, params=[files]).to_arrow_table()
    log(f"v{per_key} oracle (inequality join) {time.perf_counter() - t0:.1f}s")
    got = runs["lookup"]["out"][0]
    checked = compare(oracle_con, oracle, got, ordered=True)
    known_oracle = oracle_con.sql(ORACLE_KNOWN, params=[files]).to_arrow_table()
    known = compare(oracle_con, known_oracle, runs["known_time"]["out"][0], ordered=True)
    known["fallbacks"] = json.loads(runs["known_time"]["out"][0].schema.metadata[b"ultron"])[
        "tables"]["user_stats"]["known_time_fallback"]
    raw_checked = compare(oracle_con, oracle, runs["raw_asof"]["out"][0], ordered=False)
    same_e2e = all(r["fingerprint"] == fingerprint(oracle_con, got.to_pandas())
                   for r in e2e["toolkit"])
    store.close()
    return summarize(per_key, keys, rows, runs, e2e, checked, raw_checked, same_e2e,
                     write_stats, samples, known)


def summarize(per_key: int, keys: int, rows: int, runs: dict[str, Any],
              e2e: dict[str, list[dict[str, Any]]], checked: dict[str, int],
              raw_checked: dict[str, int], same_e2e: bool, write_stats: list[Any],
              samples: Any, known: dict[str, int]) -> dict[str, Any]:
    import pyarrow.compute as pc

    def med(name: str, what: str = "wall") -> float:
        return median(runs[name][what])

    tk = [r["seconds"] for r in e2e["toolkit"]]
    rw = [r["seconds"] for r in e2e["raw"]]
    clean = {"dropped": 0, "wrong": 0, "extra": 0}
    equal = (checked == clean and same_e2e and raw_checked == clean
             and {k: known[k] for k in clean} == clean)
    return {
        "lookup_vs_raw_asof": round(med("raw_asof") / med("lookup"), 3),
        "end_to_end_vs_raw_asof": round(median(rw) / median(tk), 3),
        "rss_mb": round(median([r["rss_mb"] for r in e2e["toolkit"]]), 1),
        "results_equal": bool(equal),
        "dropped": checked["dropped"],
        "wrong": checked["wrong"] + checked["extra"],
        "raw_vs_oracle": raw_checked,
        "known_time": {**known, "seconds": round(med("known_time"), 3),
                       "spread": spread(runs["known_time"]["wall"])},
        "end_to_end_matches_lookup": same_e2e,
        "samples": rows, "versions_per_key": per_key, "keys": keys,
        "seconds": {"lookup": round(med("lookup"), 3), "raw_asof": round(med("raw_asof"), 3),
                    "end_to_end": round(median(tk), 3), "raw_end_to_end": round(median(rw), 3)},
        "spread": {"lookup": spread(runs["lookup"]["wall"]),
                   "raw_asof": spread(runs["raw_asof"]["wall"]), "end_to_end": spread(tk),
                   "raw_end_to_end": spread(rw)},
        "cpu_ratios": {"lookup_vs_raw_asof": round(med("raw_asof", "cpu")
                                                   / med("lookup", "cpu"), 3),
                       "end_to_end_vs_raw_asof": round(
                           median([r["cpu"] for r in e2e["raw"]])
                           / median([r["cpu"] for r in e2e["toolkit"]]), 3)},
        "raw_rss_mb": round(median([r["rss_mb"] for r in e2e["raw"]]), 1),
        "dirty": {
            "writes": len(write_stats),
            "rows_written": sum(w.rows_in for w in write_stats),
            "duplicates_resolved": sum(w.duplicates for w in write_stats),
            "restated": sum(w.restated for w in write_stats),
            "outdated_on_arrival": sum(w.outdated for w in write_stats),
            "feature_null_keys_dropped": sum(w.null_keys_dropped for w in write_stats),
            "current_versions": write_stats[-1].current,
            "sample_null_keys": int(samples.column("user_id").null_count),
            "samples_without_a_version": int(pc.sum(pc.is_null(
                runs["lookup"]["out"][0].column("user_stats__version_time"))).as_py()),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="samples")
    parser.add_argument("--versions", type=int, default=1_000_000, help="feature versions")
    parser.add_argument("--per-key", type=int, nargs="+", default=[10, 100],
                        help="versions per key, one configuration each")
    parser.add_argument("--writes", type=int, default=3, help="feature files (writes)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--e2e-repeat", type=int, default=5,
                        help="end-to-end runs (fresh processes) per side")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]))), flush=True)
        return 0

    import duckdb

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ultron-backtrack-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"rows={args.rows} versions={args.versions} per_key={args.per_key} "
        f"writes={args.writes} threads={os.cpu_count()} duckdb={duckdb.__version__} "
        f"load={os.getloadavg()[0]:.1f} workdir={work}")
    try:
        out: dict[str, Any] = {}
        prepared: dict[str, Any] | None = None
        for per_key in args.per_key:
            result = bench_lookup(work, args.rows, args.versions, per_key, args.writes,
                                  args.repeat, args.e2e_repeat)
            if prepared is None:  # the history is the first configuration's samples
                prepared = bench_prepare(work, work / f"samples_v{per_key}.parquet",
                                         args.partitions, args.repeat)
            out[f"v{per_key}"] = {**result, **prepared}
            log(json.dumps({f"v{per_key}": out[f"v{per_key}"]}))
        print(json.dumps(out), flush=True)
        return 0
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
