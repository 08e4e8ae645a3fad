"""The hidden true model behind the generated click logs: who clicks what, and why.

A :class:`World` is drawn once per ``(seed, users, items, ctr)``: users with skewed
activity, a bias and a latent vector each; items with skewed popularity, a bias and a latent
vector each. The probability that a user clicks an item shown at a position is a logistic
model of those and of two numeric context features carried by every impression::

    logit p = b0 + user_bias[u] + item_bias[i] + 0.8 * <U[u], V[i]>
              - 0.45 * ln(position) + 0.25 * cos(2π (hour - 20) / 24)
              + 0.3 * (ln(dwell) - 3) / 0.8

``hour`` is the hour of the day of the event time, ``dwell`` the seconds the user spent on
the previous page. ``b0`` is chosen so that the mean click probability of the exploration
log (items by popularity, positions 1-10 uniform) is ``ctr``.

A trained model can learn the biases, the position and the context effects from a click log
(the latent part needs crossed features): it beats chance, and a better model, chosen to
rank the candidates of a request, shows items with a higher click probability — the realised
CTR of the requests it serves goes up. :meth:`World.respond` draws the users' answers with
*common random numbers*: the same request shown the same item clicks the same way under
every experiment, so a difference between experiments is the models', not the dice's.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

DIM = 4
POSITIONS = 10
INTERACTION = 0.8
POSITION_WEIGHT = -0.45
HOUR_WEIGHT = 0.25
DWELL_WEIGHT = 0.3
DWELL_MU, DWELL_SIGMA = 3.0, 0.8  # ln(seconds)
MIN_DELAY_MS = 200

_M64 = (1 << 64) - 1
_STREAM_CLICK, _STREAM_DELAY = 0x5EED_C11C, 0xDE1A_7000


@dataclass(frozen=True)
class WorldParams:
    """What a World is drawn from (kept in the manifest of the topics it generated)."""

    seed: int = 0
    users: int = 1000
    items: int = 200
    ctr: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "users": self.users, "items": self.items, "ctr": self.ctr}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldParams:
        return cls(int(data.get("seed", 0)), int(data.get("users", 1000)),
                   int(data.get("items", 200)), float(data.get("ctr", 0.05)))


class World:
    """Users, items and the hidden click model of one :class:`WorldParams`."""

    def __init__(self, params: WorldParams):
        import numpy as np

        self.params = params
        rng = np.random.default_rng([params.seed, 7])
        n_users, n_items = params.users, params.items
        activity = rng.lognormal(0.0, 1.0, n_users)
        self.user_p = activity / activity.sum()
        popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
        rng.shuffle(popularity)
        self.item_p = popularity / popularity.sum()
        self.user_bias = rng.normal(0.0, 0.4, n_users)
        self.item_bias = rng.normal(0.0, 0.8, n_items)
        scale = 1.0 / math.sqrt(DIM)
        self.user_vec = rng.normal(0.0, scale, (n_users, DIM))
        self.item_vec = rng.normal(0.0, scale, (n_items, DIM))
        self.b0 = 0.0
        self.b0 = self._calibrate(np.random.default_rng([params.seed, 8]), params.ctr)

    # ------------------------------------------------------------------ the model
    def logit(self, users: Any, items: Any, positions: Any, hours: Any, dwell: Any
              ) -> np.ndarray:
        import numpy as np

        u = np.asarray(users, dtype=np.int64)
        i = np.asarray(items, dtype=np.int64)
        inter = np.einsum("ij,ij->i", self.user_vec[u], self.item_vec[i])
        return (self.b0 + self.user_bias[u] + self.item_bias[i] + INTERACTION * inter
                + POSITION_WEIGHT * np.log(np.asarray(positions, dtype=float))
                + HOUR_WEIGHT * np.cos(2 * np.pi * (np.asarray(hours, dtype=float) - 20) / 24)
                + DWELL_WEIGHT * (np.log(np.asarray(dwell, dtype=float)) - DWELL_MU)
                / DWELL_SIGMA)

    def p_click(self, users: Any, items: Any, positions: Any, hours: Any, dwell: Any
                ) -> np.ndarray:
        """The true click probability of each impression."""
        import numpy as np

        return 1.0 / (1.0 + np.exp(-self.logit(users, items, positions, hours, dwell)))

    def _calibrate(self, rng: Any, ctr: float, n: int = 20_000) -> float:
        """``b0`` such that the exploration log's mean click probability is ``ctr``."""
        import numpy as np

        users = rng.choice(self.params.users, n, p=self.user_p)
        items = rng.choice(self.params.items, n, p=self.item_p)
        positions = rng.integers(1, POSITIONS + 1, n)
        hours = rng.integers(0, 24, n)
        dwell = self.draw_dwell(rng, n)
        rest = self.logit(users, items, positions, hours, dwell)  # with b0 = 0
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if float(np.mean(1.0 / (1.0 + np.exp(-(rest + mid))))) < ctr:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    # ------------------------------------------------------------------ draws
    @staticmethod
    def draw_dwell(rng: Any, n: int) -> np.ndarray:
        """Seconds on the previous page (log-normal), rounded to 0.1 s."""
        import numpy as np

        return np.maximum(np.round(rng.lognormal(DWELL_MU, DWELL_SIGMA, n), 1), 0.1)

    def draw_users(self, rng: Any, n: int) -> np.ndarray:
        return rng.choice(self.params.users, n, p=self.user_p)

    def draw_items(self, rng: Any, n: int) -> np.ndarray:
        return rng.choice(self.params.items, n, p=self.item_p)

    def respond(self, keys: Any, users: Any, items: Any, positions: Any, hours: Any,
                dwell: Any, *, mean_delay: float = 20.0, max_delay: float = 300.0
                ) -> tuple[np.ndarray, np.ndarray]:
        """Which impressions are clicked, and after how many ms: drawn from the true model
        with random numbers fixed by ``keys`` (e.g. ``(request id, item)`` pairs hashed by
        :func:`key_of`), so the same impression clicks the same way in every experiment."""
        import numpy as np

        p = self.p_click(users, items, positions, hours, dwell)
        k = np.asarray(keys, dtype=np.uint64)
        clicked = uniform(self.params.seed, _STREAM_CLICK, k) < p
        wait = -np.log1p(-uniform(self.params.seed, _STREAM_DELAY, k)) * mean_delay
        delays = np.maximum((np.minimum(wait, max_delay) * 1000).astype(np.int64),
                            MIN_DELAY_MS)
        return clicked, delays


@functools.lru_cache(maxsize=8)
def world_of(params: WorldParams) -> World:
    """The World of ``params`` (drawn once per process)."""
    return World(params)


def hour_of(ts_ms: Any) -> np.ndarray:
    """The hour of the day (0-23, UTC) of epoch-ms event times."""
    import numpy as np

    return (np.asarray(ts_ms, dtype=np.int64) // 3_600_000) % 24


# ----------------------------------------------------------------------------- hashing
def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, on uint64 arrays (wrapping arithmetic)."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def key_of(a: Any, b: Any) -> np.ndarray:
    """One uint64 key per pair (e.g. request id and item id)."""
    import numpy as np

    return _mix(np.asarray(a, dtype=np.int64).astype(np.uint64)) ^ \
        np.asarray(b, dtype=np.int64).astype(np.uint64)


def uniform(seed: int, stream: int, keys: Any) -> np.ndarray:
    """A uniform number in [0, 1) per key, fixed by ``(seed, stream, key)``."""
    import numpy as np

    base = np.uint64((seed * 0x2545F4914F6CDD1D + stream) & _M64)
    z = _mix(_mix(np.asarray(keys, dtype=np.uint64) ^ base))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def bucket_of(user_ids: Any, buckets: int = 100) -> np.ndarray:
    """A user's traffic bucket (0..buckets-1), stable across processes."""
    import numpy as np

    return (_mix(np.asarray(user_ids, dtype=np.int64).astype(np.uint64) ^ np.uint64(0xB0C))
            % np.uint64(buckets)).astype(np.int64)


__all__ = ["World", "WorldParams", "bucket_of", "hour_of", "key_of", "uniform", "world_of"]
