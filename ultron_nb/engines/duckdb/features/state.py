"""One feature table in memory: every version it holds and which of them are current.

The rows of every write are kept (a restatement is a new version of what was known, the old
row stays for known-time lookups). Write-time bookkeeping makes lookups cheap:

- each key gets a small integer **code** (a dictionary kept with the table), so the lookup's
  ordered merge compares integers, not strings;
- a **superseded** mask marks the rows that are no longer current: for each (key, version
  time) only the row with the latest ingest time (then the latest write) is current.

:meth:`TableState.index` is the narrow, clean table a lookup merges against: one row per
(key, version time), with the code, the version and ingest times and the row's position in
:meth:`TableState.history`.
"""

from __future__ import annotations

import threading
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ultron_nb.engines.duckdb.connection import ident
from ultron_nb.engines.duckdb.features.layout import INGEST, TableDir, TableMeta
from ultron_nb.engines.duckdb.features.merge import packing

CODE = "__code"


def encode_keys(rows: pa.Table, keys: tuple[str, ...] | list[str]
                ) -> tuple[np.ndarray, pa.Table]:
    """Each row's key as a dense integer (in order of first appearance) and the distinct keys
    (one row per integer)."""
    n = rows.num_rows
    combined: np.ndarray | None = None
    for k in keys:
        enc = pc.dictionary_encode(rows.column(k).combine_chunks())
        ids = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        if combined is None:
            combined = ids
        else:  # re-densify, so the product of sizes never overflows
            merged = combined * len(enc.dictionary) + ids
            combined = pc.dictionary_encode(pa.array(merged)).indices.to_numpy().astype(np.int64)
    if combined is None or n == 0:
        return np.zeros(0, dtype=np.int64), rows.select(list(keys)).slice(0, 0)
    if len(keys) > 1:
        combined = pc.dictionary_encode(pa.array(combined)).indices.to_numpy().astype(np.int64)
    seen = np.maximum.accumulate(combined)
    first = np.flatnonzero(np.r_[True, combined[1:] > seen[:-1]])
    return combined, rows.select(list(keys)).take(pa.array(first))


def sort_order(groups: np.ndarray, vt: np.ndarray, ingest: np.ndarray) -> np.ndarray:
    """The permutation sorting rows by key, version time, ingest time (input order on ties).

    (key, version time) pairs packed into one ``int64`` (:mod:`.merge`) are sorted by numpy's
    vectorised sort (either packing keeps their order); the few runs of equal pairs are then
    ordered by ingest time and position."""
    n = len(vt)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = packing(groups, vt).index_keys(groups.astype(np.int64, copy=False), vt)
    order = np.argsort(keys)
    keys = keys[order]
    same = keys[1:] == keys[:-1]
    if same.any():
        run = np.zeros(n, dtype=bool)
        run[1:] |= same
        run[:-1] |= same
        spots = np.flatnonzero(run)  # contiguous runs of equal pairs, in key order
        members = order[spots]
        members = members[np.lexsort((members, ingest[members], keys[spots]))]
        order[spots] = members
    return order


class TableState:
    """The loaded versions of one table (append-only; see the module docstring)."""

    def __init__(self, meta: TableMeta):
        self.meta = meta
        self.seqs: list[int] = []
        self._history: pa.Table | None = None  # the rows of the writes merged so far
        self._pending: list[pa.Table] = []  # rows of later writes, merged on first read
        self._sizes: list[int] = []
        self._runs: list[pa.Table] = []  # per write: its lookup index, sorted by key and time
        self._offsets: dict[int, int] = {}
        self._dead = np.zeros(0, dtype=bool)
        self.keys: pa.Table | None = None  # key columns + CODE
        self._cache: dict[str, pa.Table] = {}
        self._walk: dict[str, dict[str, Any]] = {}
        # Writes append while lookups read: the merges of history() and index() and every
        # change hold this lock, so a reader never sees half of a write.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ sizes
    @property
    def rows(self) -> int:
        """Rows held, current or superseded."""
        return len(self._dead)

    @property
    def current(self) -> int:
        return int(len(self._dead) - self._dead.sum())

    @property
    def signature(self) -> tuple[int, ...]:
        return tuple(self.seqs)

    # ------------------------------------------------------------------ loading
    def catch_up(self, cur: duckdb.DuckDBPyConnection, folder: TableDir) -> int:
        """Load the writes published on disk since the last call; return how many."""
        new = [s for s in folder.writes() if not self.seqs or s > self.seqs[-1]]
        for seq in new:
            rows = pq.read_table(folder.rows_file(seq))
            sup_path = folder.superseded_file(seq)
            pairs = pq.read_table(sup_path) if sup_path.is_file() else None
            codes = self.assign_codes(cur, *encode_keys(rows, self.meta.key))
            order = sort_order(codes, _ints(rows.column(self.meta.version_time)),
                               _ints(rows.column(INGEST)))
            superseded = np.zeros(0, dtype=np.int64)
            if pairs is not None and pairs.num_rows:
                superseded = self._positions(seq, rows.num_rows, pairs)
            self.apply(seq, rows, codes, superseded, order)
        return len(new)

    def _positions(self, seq: int, n: int, pairs: pa.Table) -> np.ndarray:
        """(write, row) pairs of the ``s-`` file of write ``seq`` as global row positions."""
        seqs = np.array([*self.seqs, seq], dtype=np.int64)
        starts = np.array([*(self._offsets[s] for s in self.seqs), self.rows], dtype=np.int64)
        writes = pairs.column("write").to_numpy().astype(np.int64)
        which = np.searchsorted(seqs, writes)
        if (which >= len(seqs)).any() or (seqs[np.minimum(which, len(seqs) - 1)] != writes).any():
            raise ValueError(f"write {seq} supersedes rows of a write that is not loaded")
        return starts[which] + pairs.column("row").to_numpy().astype(np.int64)

    def pairs(self, positions: np.ndarray, seq: int) -> pa.Table:
        """Global row positions as (write, row) pairs for the ``s-`` file of write ``seq``."""
        starts = np.array([self._offsets[s] for s in self.seqs] + [self.rows], dtype=np.int64)
        seqs = np.array([*self.seqs, seq], dtype=np.int64)
        which = np.searchsorted(starts, positions, side="right") - 1
        return pa.table({"write": pa.array(seqs[which], pa.int32()),
                         "row": pa.array(positions - starts[which], pa.int64())})

    # ------------------------------------------------------------------ writing
    def assign_codes(self, cur: duckdb.DuckDBPyConnection, groups: np.ndarray,
                     group_keys: pa.Table) -> np.ndarray:
        """The table's key code of each row, given the rows' key ``groups`` (indexes into
        ``group_keys``, one row per distinct key); keys not seen before get new codes."""
        names = list(self.meta.key)
        if self.keys is None:
            self.keys = group_keys.schema.append(pa.field(CODE, pa.int32())).empty_table()
        group_codes = np.full(group_keys.num_rows, -1, dtype=np.int32)
        if self.keys.num_rows and group_keys.num_rows:
            on = " AND ".join(f"u.{ident(c)} = d.{ident(c)}" for c in names)
            cur.register("__ultron_u", group_keys.append_column("__g", pa.array(
                np.arange(group_keys.num_rows, dtype=np.int64))))
            cur.register("__ultron_d", self.keys)
            try:
                got = cur.execute(f"SELECT u.__g, d.{CODE} FROM __ultron_u u JOIN __ultron_d d "
                                  f"ON {on}").fetchnumpy()
            finally:
                cur.unregister("__ultron_u")
                cur.unregister("__ultron_d")
            group_codes[np.asarray(got["__g"])] = np.asarray(got[CODE])
        fresh = np.flatnonzero(group_codes < 0)
        if len(fresh):
            first = self.keys.num_rows
            group_codes[fresh] = np.arange(first, first + len(fresh), dtype=np.int32)
            added = group_keys.take(pa.array(fresh)).append_column(
                CODE, pa.array(group_codes[fresh]))
            self.keys = pa.concat_tables([self.keys, added.cast(self.keys.schema)]
                                         ).combine_chunks()
        return group_codes[groups]

    def apply(self, seq: int, rows: pa.Table, codes: np.ndarray, superseded: np.ndarray,
              order: np.ndarray) -> None:
        """Append write ``seq`` (its rows, their key codes, the permutation sorting them by key
        and times) and mark ``superseded`` rows."""
        with self._lock:
            self._apply(seq, rows, codes, superseded, order)

    def _apply(self, seq: int, rows: pa.Table, codes: np.ndarray, superseded: np.ndarray,
               order: np.ndarray) -> None:
        first = self._history if self._history is not None else (
            self._pending[0] if self._pending else None)
        if first is not None and rows.schema != first.schema:
            rows = rows.cast(first.schema)
        self._offsets[seq] = self.rows
        self.seqs.append(seq)
        self._sizes.append(rows.num_rows)
        self._pending.append(rows)
        base = self._offsets[seq]
        self._runs.append(pa.table({
            CODE: pa.array(codes[order]),
            "__vt": rows.column(self.meta.version_time).take(pa.array(order)),
            "__ingest": rows.column(INGEST).take(pa.array(order)),
            "__write": pa.array(np.full(len(order), seq, dtype=np.int32)),
            "__i": pa.array(order + base)}))
        self._dead = np.concatenate([self._dead, np.zeros(rows.num_rows, dtype=bool)])
        if len(superseded):
            self._dead[superseded] = True
        self._cache.clear()
        self._walk.clear()

    # ------------------------------------------------------------------ reading
    def history(self) -> pa.Table:
        """Every row held (current and superseded), in write order, one chunk per column."""
        with self._lock:
            return self._merged()

    def _merged(self) -> pa.Table:
        if self._pending:
            parts = ([self._history] if self._history is not None else []) + self._pending
            self._history = pa.concat_tables(parts).combine_chunks()
            self._pending = []
        if self._history is None:
            raise ValueError(f"feature table {self.meta.name!r} holds no rows")
        return self._history

    def index(self, *, live_only: bool = True) -> pa.Table:
        """The narrow lookup table: code, version time, ingest time, write and row position in
        :meth:`history`; one sorted run per write (current rows only with ``live_only``)."""
        name = "live" if live_only else "all"
        with self._lock:
            return self._index(name)

    def _index(self, name: str) -> pa.Table:
        if name not in self._cache:
            table = pa.concat_tables(self._runs).combine_chunks()
            if name == "live":
                table = table.filter(pa.array(~self._dead[table.column("__i").to_numpy()]))
            self._cache[name] = table
        return self._cache[name]

    def sorted_live(self) -> dict[str, Any]:
        """The current rows (one per key code and version time) as the as-of merge searches
        them (:mod:`.merge`): ``keys``, the pairs packed by ``packing`` and sorted, and
        ``row``, each one's position in :meth:`history`. Built straight from the per-write
        runs with as few arrays as it can (each new array is page faults on a fresh process)."""
        with self._lock:
            if "live" not in self._walk:
                code = np.concatenate([r.column(CODE).to_numpy() for r in self._runs]
                                      ).astype(np.int64)
                row = np.concatenate([r.column("__i").to_numpy() for r in self._runs])
                vt = np.concatenate([_ints(r.column("__vt")) for r in self._runs])
                alive = ~self._dead[row]
                if not alive.all():
                    code, row, vt = code[alive], row[alive], vt[alive]
                pack = packing(code, vt) if len(code) else None
                keys = pack.index_keys(code, vt) if pack else np.zeros(0, np.int64)
                order = np.argsort(keys)  # both packings sort as (code, version time) does
                self._walk["live"] = {"keys": keys[order], "row": row[order],
                                      "packing": pack}
            return self._walk["live"]

    def times(self, column: str) -> np.ndarray:
        """A time column of :meth:`history` as ``int64`` microseconds (NULLs never occur)."""
        with self._lock:
            name = f"times:{column}"
            if name not in self._walk:
                self._walk[name] = {"values": _ints(self._merged().column(column))}
            return self._walk[name]["values"]

    def walk(self, cur: duckdb.DuckDBPyConnection) -> dict[str, np.ndarray]:
        """Every row sorted by key code, version time, ingest time and position (numpy
        arrays ``code``, ``vt``, ``ingest`` in microseconds and ``row``), and ``position``: the
        place of each history row in that order. For known-time lookups."""
        with self._lock:
            if "walk" not in self._walk:
                table = self._index("all")
                code = table.column(CODE).to_numpy()
                vt, ingest = _ints(table.column("__vt")), _ints(table.column("__ingest"))
                row = table.column("__i").to_numpy()
                cur.register("__ultron_w", pa.table({"c": code, "v": vt, "g": ingest, "r": row,
                                                     "k": np.arange(len(row))}))
                try:
                    order = np.asarray(cur.sql("SELECT k FROM __ultron_w ORDER BY c, v, g, r")
                                       .fetchnumpy()["k"], dtype=np.int64)
                finally:
                    cur.unregister("__ultron_w")
                position = np.empty(self.rows, dtype=np.int64)
                position[row[order]] = np.arange(len(order))
                self._walk["walk"] = {"code": code[order], "vt": vt[order],
                                      "ingest": ingest[order], "row": row[order],
                                      "position": position}
            return self._walk["walk"]

    def live_mask(self) -> np.ndarray:
        return ~self._dead

    def memory_bytes(self) -> int:
        """Bytes held by the Arrow buffers (history, indexes, key dictionary)."""
        held = [*self._cache.values(), *self._pending, self._history, self.keys]
        return int(sum(t.nbytes for t in held if t is not None))


def _ints(column: Any) -> np.ndarray:
    """A timestamp (or integer) column as ``int64`` numbers (timestamps in microseconds)."""
    if pa.types.is_timestamp(column.type) and column.type.unit != "us":
        column = column.cast(pa.timestamp("us", column.type.tz))
    return column.cast(pa.int64()).to_numpy()
