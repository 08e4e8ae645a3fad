"""The as-of merge: each sample's (key code, time) against a table's sorted lookup index.

The index holds one row per (key code, version time), sorted by both. A pair becomes one
``int64`` that sorts the same way — ``code * span + (time - first version time)`` when every
code and the table's time range fit, else ``code * (n + 1) + rank`` with the rank of the time
among the table's ``n`` distinct version times (always fits). The samples' packed keys are
sorted once and binary-searched in the index's: the match of a sample is the last index row
with a key ``<=`` its own, provided it has the same code. Two vectorised sorts and one ordered
search, no hash table and no per-key loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

_ROOM = 1 << 62  # packed keys stay below this (headroom for the +1 offsets)


@dataclass(frozen=True)
class Packing:
    """How (code, time) pairs of one index become sortable ``int64`` keys (a key's code is
    ``key // span``)."""

    span: int  # multiplier of the code
    base: int  # the first version time (offset packing)
    times: np.ndarray | None  # the distinct version times (rank packing), else None

    def index_keys(self, code: np.ndarray, vt: np.ndarray) -> np.ndarray:
        """Keys of index rows (``vt`` is one of the table's version times)."""
        if self.times is None:
            return code * self.span + (vt - self.base + 1)
        return code * self.span + _sorted_search(self.times, vt, "left") + 1

    def sample_keys(self, code: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Keys of samples: ``<=`` an index row's key of the same code iff that row's version
        time is ``<= t``."""
        if self.times is None:
            last = self.base + self.span - 2  # the latest version time
            keys = np.clip(t, self.base - 1, last)
            keys -= self.base - 1
        else:
            keys = _sorted_search(self.times, t)
        keys += code * self.span
        return keys


def packing(code: np.ndarray, vt: np.ndarray) -> Packing:
    """The packing for an index of these codes and version times (non-empty)."""
    first, last = int(vt.min()), int(vt.max())
    codes = int(code.max()) + 1
    span = last - first + 2
    if codes * span < _ROOM:
        return Packing(span, first, None)
    times = np.unique(vt)
    return Packing(len(times) + 1, 0, times)


def asof(index_keys: np.ndarray, pack: Packing, code: np.ndarray, t: np.ndarray,
         valid: np.ndarray) -> np.ndarray:
    """For each sample (``code``, ``t``; ``valid`` False for a missing key or time), the
    position in the sorted index (its packed ``index_keys``) of the latest row of its code with
    version time ``<= t``, or -1. Arrays ``int64``, times in the unit of the index's. Few
    temporaries: on a fresh process every new array is page faults."""
    if not len(index_keys) or not valid.any():
        return np.full(len(code), -1, dtype=np.int64)
    want = pack.sample_keys(code, t)
    want[~valid] = -1  # below every index key (those are >= 1)
    order = np.argsort(want)
    found = np.searchsorted(index_keys, want[order], side="right")
    found -= 1
    out = want  # reuse: ``want`` is not needed any more
    out[order] = found
    miss = out < 0
    miss |= index_keys[out] // pack.span != code  # a key's code; out = -1 is masked anyway
    out[miss] = -1
    return out


def _sorted_search(sorted_values: np.ndarray, queries: np.ndarray,
                   side: Literal["left", "right"] = "right") -> np.ndarray:
    """``np.searchsorted(sorted_values, queries, side)``, by sorting the queries first (a
    search of sorted queries walks the array in order: far fewer cache misses)."""
    order = np.argsort(queries)
    out = np.empty(len(queries), dtype=np.int64)
    out[order] = np.searchsorted(sorted_values, queries[order], side=side)
    return out
