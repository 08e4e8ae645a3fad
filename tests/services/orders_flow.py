"""A second stream flow (not the CTR demo): orders + payments → paid_orders.

``paid_orders`` labels each order paid (1) when a payment for it arrives within 10 minutes of
event time (a LEFT interval join), else 0. The data is deterministic: a timeline of orders per
partition and, for most orders, a payment some seconds to 15 minutes later, in the payments
partition its order id hashes to. :class:`Feed` appends that timeline to the two local topics
in slices of event time, one segment per slice and partition, in whatever pattern a test wants
(a burst, different rates, an idle partition), then flush rows that push the watermark past
the data; :func:`truth` computes the expected output in
pandas from what the topic files hold; :func:`compare` counts missing, duplicated and wrong
rows of an output against it.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ultron_nb.engines import outputs
from ultron_nb.engines.topics import LocalTopic
from ultron_nb.flow.build import define_node
from ultron_nb.store import experiments as repo

ORDERS = "order_id STRING, user_id STRING, amount DOUBLE, ts TIMESTAMP(3)"
PAYMENTS = "order_id STRING, paid DOUBLE, ts TIMESTAMP(3)"
PAID_ORDERS = """
SELECT o.order_id, o.user_id, o.amount, o.ts,
       CASE WHEN p.order_id IS NULL THEN 0 ELSE 1 END AS paid
FROM orders o
LEFT JOIN payments p
  ON o.order_id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' MINUTE
"""
PAID_MINUTE = """
SELECT window_start, COUNT(*) AS orders, SUM(paid) AS paid
FROM TABLE(TUMBLE(TABLE paid_orders, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end
"""
T0 = datetime(2025, 3, 1)
SLICE = timedelta(minutes=1)
WINDOW = timedelta(minutes=10)
FLUSH = "flush"  # order ids of the rows that push the watermark past the data


def define_orders_flow(ws: Any, flow: str = "orders", *, partitions: int = 3,
                       parallelism: int = 2, path_prefix: str | None = None,
                       downstream: bool = True) -> Any:
    """The two topics, ``paid_orders`` and (with ``downstream``) ``paid_minute``.
    ``path_prefix`` points the topics at ``<prefix>/orders`` and ``<prefix>/payments``
    (another flow over the same files)."""
    paths = ({"orders": f"{path_prefix}/orders", "payments": f"{path_prefix}/payments"}
             if path_prefix else {})
    ws.define(flow, define_node("orders", ORDERS, kind="topic", time="ts", watermark="5 s",
                                partitions=partitions, key="user_id",
                                path=paths.get("orders")))
    ws.define(flow, define_node("payments", PAYMENTS, kind="topic", time="ts",
                                watermark="5 s", partitions=partitions, key="order_id",
                                path=paths.get("payments")))
    options = {"checkpoint_interval": "1 s"}
    ws.define(flow, define_node("paid_orders", PAID_ORDERS, options={
        **options, "parallelism": str(parallelism)}))
    if downstream:  # reads paid_orders' output: its sink subtasks' part files, as partitions
        ws.define(flow, define_node("paid_minute", PAID_MINUTE, options=options))
    return ws.flow(flow)


def _fmt(ts: datetime) -> str:
    return ts.isoformat(" ", "milliseconds")


def _bucket(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


@dataclass
class Feed:
    """Appends a deterministic order/payment timeline to the topics, slice by slice: one
    segment per slice, partition and topic. Segments are written directly (a burst of them
    takes milliseconds, as a producer flushing a batch), or with ``api`` through
    ``Workspace.append``."""

    ws: Any
    flow: str = "orders"
    partitions: int = 3
    api: bool = False
    orders_per_slice: int = 20
    seed: int = 7
    cursor: list[int] = field(default_factory=list)  # next slice per partition
    _cache: dict[tuple[int, int], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = field(
        default_factory=dict)
    _topics: dict[str, LocalTopic] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cursor = [0] * self.partitions

    def _write(self, topic: str, part: int, rows: list[dict[str, Any]]) -> None:
        import pandas as pd

        if self.api:
            self.ws.append(topic, pd.DataFrame(rows), partition=part, flow=self.flow)
            return
        if topic not in self._topics:
            path = self.ws.settings.home / "topics" / topic
            if (path / "_topic.json").is_file():
                self._topics[topic] = LocalTopic.open(path)
            else:
                schema = ORDERS if topic == "orders" else PAYMENTS
                cols = [c.strip().split(" ", 1) for c in schema.split(",")]
                self._topics[topic] = LocalTopic(path, self.partitions,
                                                 [(n, t) for n, t in cols], "ts").create()
        # Up to 2 s of disorder inside a segment (within the 5 s watermark delay).
        rng = random.Random(zlib.crc32(f"{topic}/{part}/{rows[0]['order_id']}".encode()))
        rows = sorted(rows, key=lambda r: datetime.fromisoformat(r["ts"])
                      + timedelta(milliseconds=rng.randrange(2000)))
        self._topics[topic].append(part, rows)

    def _slice(self, part: int, slice_no: int) -> tuple[list[dict[str, Any]],
                                                         list[dict[str, Any]]]:
        """Orders of one partition and minute, and the payments of those orders."""
        key = (part, slice_no)
        if key not in self._cache:
            rng = random.Random(self.seed * 1_000_003 + part * 10_007 + slice_no)
            start = T0 + slice_no * SLICE
            orders, pays = [], []
            for i in range(self.orders_per_slice):
                ts = start + timedelta(milliseconds=rng.randrange(0, 60_000))
                order = {"order_id": f"o{part}-{slice_no}-{i}", "user_id": f"u{rng.randrange(50)}",
                         "amount": round(rng.uniform(1, 200), 2), "ts": ts}
                orders.append(order)
                draw = rng.random()
                if draw < 0.55:  # paid in time
                    delay = rng.randrange(1_000, 9 * 60_000)
                elif draw < 0.75:  # paid too late: labelled 0
                    delay = rng.randrange(11 * 60_000, 15 * 60_000)
                else:
                    continue
                pays.append({"order_id": order["order_id"], "paid": order["amount"],
                             "ts": ts + timedelta(milliseconds=delay)})
            self._cache[key] = (orders, pays)
        return self._cache[key]

    def _payments_of(self, part: int, slice_no: int) -> list[dict[str, Any]]:
        """Payments in minute ``slice_no`` that hash to payments partition ``part``."""
        start, end = T0 + slice_no * SLICE, T0 + (slice_no + 1) * SLICE
        out = []
        for p in range(self.partitions):
            for s in range(max(0, slice_no - 16), slice_no + 1):
                out += [r for r in self._slice(p, s)[1] if start <= r["ts"] < end
                        and _bucket(r["order_id"], self.partitions) == part]
        # A heartbeat keeps one segment per minute (it matches no order).
        return out or [{"order_id": f"{FLUSH}-hb-{part}-{slice_no}", "paid": 0.0,
                        "ts": start}]

    def append(self, part: int, slices: int = 1) -> None:
        """Append the next ``slices`` minutes of partition ``part`` of both topics: one
        segment per minute and topic."""
        for _ in range(slices):
            n = self.cursor[part]
            self._write("orders", part, [{**r, "ts": _fmt(r["ts"])}
                                         for r in self._slice(part, n)[0]])
            self._write("payments", part, [{**r, "ts": _fmt(r["ts"])}
                                           for r in self._payments_of(part, n)])
            self.cursor[part] = n + 1

    def append_big(self, part: int, count: int) -> str:
        """The next minute of partition ``part`` with ``count`` more orders, each paid at its
        own time: payments first, then one big orders segment. Read, its orders come out one
        by one as they are read (each matches at once). Returns their order-id prefix."""
        n = self.cursor[part]
        orders, pays = self._slice(part, n)[0], self._payments_of(part, n)
        prefix = f"big-{part}-{n}-"
        start = T0 + n * SLICE
        big = [{"order_id": f"{prefix}{i}", "user_id": f"u{i % 50}", "amount": 1.0,
                "ts": start + timedelta(milliseconds=i * 60_000 // count)} for i in range(count)]
        self._write("payments", part, [{**r, "ts": _fmt(r["ts"])} for r in pays] +
                    [{"order_id": r["order_id"], "paid": 1.0, "ts": _fmt(r["ts"])} for r in big])
        self._write("orders", part, [{**r, "ts": _fmt(r["ts"])} for r in orders + big])
        self.cursor[part] = n + 1
        return prefix

    def append_all(self, slices: int = 1) -> None:
        """The next ``slices`` minutes of every partition, partition after partition."""
        for part in range(self.partitions):
            self.append(part, slices)

    def flush(self, step: int) -> None:
        """Flush step ``step``: in every partition of both topics an order and its payment,
        ``20 * step`` minutes after the furthest slice. They match at once, so paid_orders
        writes them out with its watermark, which is how paid_minute learns it."""
        ts = _fmt(T0 + max(self.cursor) * SLICE + timedelta(minutes=20 * step))
        for part in range(self.partitions):  # a few keys: some reach every join subtask
            ids = [f"{FLUSH}-{step}-{part}-{i}" for i in range(4)]
            self._write("orders", part, [{"order_id": i, "user_id": "u", "amount": 0.0,
                                          "ts": ts} for i in ids])
            self._write("payments", part, [{"order_id": i, "paid": 0.0, "ts": ts}
                                            for i in ids])


def _rows(topic: LocalTopic) -> list[dict[str, Any]]:
    return topic.read()


def truth(home: Path) -> dict[str, tuple[Any, ...]]:
    """order_id → the row paid_orders must output, computed in pandas from the topic files
    (flush rows left out)."""
    import pandas as pd

    orders = pd.DataFrame(_rows(LocalTopic.open(home / "topics" / "orders")))
    pays = pd.DataFrame(_rows(LocalTopic.open(home / "topics" / "payments")))
    orders = orders[~orders.order_id.str.startswith(FLUSH)].copy()
    orders["ts"] = pd.to_datetime(orders.ts)
    pays["ts"] = pd.to_datetime(pays.ts)
    joined = orders.merge(pays[["order_id", "ts"]], on="order_id", how="left",
                          suffixes=("", "_pay"))
    within = (joined.ts_pay >= joined.ts) & (joined.ts_pay <= joined.ts + WINDOW)
    paid = within.groupby(joined.order_id).any()
    orders["paid"] = orders.order_id.map(paid).astype(int)
    return {r.order_id: _key(r.order_id, r.user_id, r.amount, r.ts, r.paid)
            for r in orders.itertuples()}


def _key(order_id: str, user_id: str, amount: float, ts: Any, paid: Any) -> tuple[Any, ...]:
    import pandas as pd

    return (order_id, user_id, round(float(amount), 2), pd.Timestamp(ts).isoformat(),
            int(paid))


def output_rows(ws: Any, experiment: str, node: str = "paid_orders") -> list[dict[str, Any]]:
    """Every row a Flink node of ``experiment`` wrote so far (in-progress files too), with
    its ``__wm`` column."""
    with ws.db.read() as conn:
        exp = repo.get_experiment(conn, experiment)
        member = next(m for m in repo.members(conn, exp.id) if m.node_name == node)
        inst = repo.get_instance(conn, member.instance_id)
    rows = []
    for path in outputs.flink_files(Path(inst.output["path"])):
        for line in outputs.read_output_file(path).decode().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def keys_of(rows: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    """The multiset of output rows, flush rows left out."""
    return Counter(_key(r["order_id"], r["user_id"], r["amount"], r["ts"], r["paid"])
                   for r in rows if not r["order_id"].startswith(FLUSH))


def flushed(ws: Any, experiment: str, want: dict[str, tuple[Any, ...]]) -> bool:
    """Has paid_minute closed the window of the last minute of ``want``? Then its watermark,
    read from paid_orders' rows, passed the data on every sink subtask, so paid_orders has
    written every order before it too."""
    last = max(minute_truth(want))[0]
    return any(k[0] == last for k in minute_keys(output_rows(ws, experiment, "paid_minute")))


def minute_truth(want: dict[str, tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    """paid_minute's rows computed from paid_orders' truth."""
    import pandas as pd

    frame = pd.DataFrame([(pd.Timestamp(v[3]).floor("min"), v[4]) for v in want.values()],
                         columns=["minute", "paid"])
    groups = frame.groupby("minute").paid.agg(["count", "sum"])
    return Counter((m.isoformat(), int(c), int(p)) for m, (c, p) in groups.iterrows())


def minute_keys(rows: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    import pandas as pd

    return Counter((pd.Timestamp(r["window_start"]).isoformat(), int(r["orders"]),
                    int(r["paid"])) for r in rows)


def compare(got: Counter[tuple[Any, ...]], want: dict[str, tuple[Any, ...]]) -> dict[str, int]:
    """missing / duplicates / wrong (and wrong positive labels) of ``got`` against ``want``."""
    by_id: dict[str, list[tuple[Any, ...]]] = {}
    for row, n in got.items():
        by_id.setdefault(row[0], []).extend([row] * n)
    missing = sum(1 for k in want if k not in by_id)
    duplicates = sum(len(v) - 1 for v in by_id.values() if len(v) > 1)
    wrong = sum(1 for k, v in by_id.items() if k not in want or v[0] != want[k])
    wrong_paid = sum(1 for k, v in by_id.items() if k in want and want[k][4] == 1
                     and v[0][4] != 1)
    return {"rows": sum(got.values()), "due": len(want), "positives":
            sum(1 for v in want.values() if v[4] == 1), "missing": missing,
            "duplicates": duplicates, "wrong": wrong, "wrong_positive": wrong_paid}
