"""Online training: one model version per event-time window, warm-started from the last.

A Python node fired once per completed window of a stream (``--after samples --boundary
1h``) trains in two lines::

    def train(ctx):
        from ultron_nb.services.learning import train_online
        return train_online(ctx, name="ctr_model")

:func:`train_online` reads the window's rows of the node's input, continues the previous
version of *its line* — the latest version of ``name`` that this experiment's node
registered for an earlier window (loaded through ``ctx.models``) — with scikit-learn's
``SGDClassifier.partial_fit`` at learning rate ``lr`` (the node's ``lr`` parameter), and
registers the result through ``ctx.log_model`` with the window, the row counts and metrics:

- ``auc``, ``logloss``: the new version on the window's *held-out* rows (``key % holdout
  == 0``; never trained on, by any version);
- ``pre_auc``, ``pre_logloss``: the previous version on the whole window before it learned
  from it (progressive validation), when there is one.

A clone with another ``lr`` trains its own line (its versions carry its experiment), and
its aliases are its own (``champion--<clone>``).

:class:`CtrModel` is the model: a logistic regression of hashed one-hot ``user_id``,
``item_id`` and ``position`` and of the numeric context (``hour`` as a daily cycle,
``log1p(dwell)``) — the features of :mod:`ultron_nb.services.datagen`'s impressions. Any
other feature columns are given by ``categorical=`` and ``numeric=``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ultron_nb.errors import ConfigError, DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

CATEGORICAL = ("user_id", "item_id", "position")
NUMERIC = ("hour", "dwell")
HASH_FEATURES = 2**18
WARM_TAG = "ultron.warm_start"


class CtrModel:
    """A logistic model trained by SGD, one ``partial_fit`` per window (see the module
    docstring). ``predict_proba`` takes a DataFrame with the feature columns."""

    def __init__(self, lr: float = 0.05, *, alpha: float = 1e-6,
                 categorical: Sequence[str] = CATEGORICAL, numeric: Sequence[str] = NUMERIC,
                 n_features: int = HASH_FEATURES, seed: int = 0):
        from sklearn.linear_model import SGDClassifier

        self.categorical = tuple(categorical)
        self.numeric = tuple(numeric)
        self.n_features = int(n_features)
        self.sgd = SGDClassifier(loss="log_loss", penalty="l2", alpha=alpha,
                                 learning_rate="constant", eta0=float(lr), random_state=seed)
        self.windows: list[tuple[int, int]] = []
        self.rows = 0

    @property
    def lr(self) -> float:
        return float(self.sgd.eta0)

    @lr.setter
    def lr(self, value: float) -> None:
        self.sgd.set_params(eta0=float(value))

    def features(self, frame: pd.DataFrame) -> Any:
        """The design matrix: hashed ``column=value`` one-hots and the numeric columns."""
        import numpy as np
        from scipy import sparse
        from sklearn.feature_extraction import FeatureHasher

        missing = [c for c in (*self.categorical, *self.numeric) if c not in frame.columns]
        if missing:
            raise DataError(f"CtrModel: the rows have no column {', '.join(missing)} "
                            f"(columns: {', '.join(map(str, frame.columns))})")
        tokens = [frame[c].astype(str).radd(f"{c}=").to_numpy() for c in self.categorical]
        hasher = FeatureHasher(n_features=self.n_features, input_type="string",
                               alternate_sign=False)
        onehot = hasher.transform(list(row) for row in zip(*tokens, strict=True)) \
            if tokens else sparse.csr_matrix((len(frame), 0))
        dense = []
        for c in self.numeric:
            values = frame[c].astype(float).to_numpy()
            if c == "hour":
                dense += [np.sin(2 * np.pi * values / 24), np.cos(2 * np.pi * values / 24)]
            else:
                dense.append(np.log1p(np.maximum(values, 0.0)))
        block = sparse.csr_matrix(np.column_stack(dense)) if dense else \
            sparse.csr_matrix((len(frame), 0))
        return sparse.hstack([onehot, block], format="csr")

    def partial_fit(self, frame: pd.DataFrame, y: Any, *, epochs: int = 1,
                    window: tuple[int, int] | None = None) -> CtrModel:
        import numpy as np

        x = self.features(frame)
        target = np.asarray(y, dtype=int)
        if len(target):
            for _ in range(max(1, epochs)):
                self.sgd.partial_fit(x, target, classes=np.array([0, 1]))
        self.rows += len(target)
        if window is not None:
            self.windows.append((int(window[0]), int(window[1])))
        return self

    @property
    def fitted(self) -> bool:
        return hasattr(self.sgd, "coef_")

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        import numpy as np

        if not self.fitted:
            return np.tile([0.5, 0.5], (len(frame), 1))
        return self.sgd.predict_proba(self.features(frame))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.predict_proba(frame)[:, 1]


def click_probability(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """P(click) of each row from any logged model: ``predict_proba``'s positive column, or
    ``predict`` (a pyfunc model, or a scorer that returns probabilities)."""
    import numpy as np

    proba = getattr(model, "predict_proba", None)
    out = proba(frame) if callable(proba) else model.predict(frame)
    values = np.asarray(out, dtype=float)
    if values.ndim == 2:
        values = values[:, -1]
    return np.clip(values, 0.0, 1.0)


# ----------------------------------------------------------------------------- windows
def window_rows(ctx: Any, input: str, *, time: str = "ts",
                window: tuple[int, int] | None = None) -> pd.DataFrame:
    """The rows of upstream ``input`` in ``window`` (default: the run's), by ``time``."""
    import pandas as pd

    frame = ctx.input_frame(input)
    window = window if window is not None else ctx.window
    if window is None:
        return frame
    if time not in frame.columns:
        raise DataError(f"node {ctx.node!r}: input {input!r} has no time column {time!r}")
    ts = pd.to_datetime(frame[time])
    start, end = (pd.Timestamp(ms, unit="ms") for ms in window)
    return frame[(ts >= start) & (ts < end)]


def holdout_mask(frame: pd.DataFrame, key: str, holdout: int) -> Any:
    """Rows held out of every training run: ``key % holdout == 0`` (none with 0)."""
    import numpy as np

    if holdout <= 0:
        return np.zeros(len(frame), dtype=bool)
    if key not in frame.columns:
        raise DataError(f"holdout: the rows have no key column {key!r}")
    return (frame[key].astype("int64") % int(holdout) == 0).to_numpy()


@dataclass
class TrainResult:
    """What one window's training did."""

    version: Any  # the RegisteredVersion (None: nothing to train on, nothing registered)
    window: tuple[int, int] | None
    warm_start: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.version is None:
            return "train_online: no rows and no previous version: nothing registered"
        warm = f" from version {self.warm_start}" if self.warm_start else " (new line)"
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(self.metrics.items()))
        return f"{self.version}{warm}: {self.rows} {shown}"


def line_versions(ctx: Any, name: str) -> list[Any]:
    """The versions of ``name`` that this experiment's node registered, newest first."""
    from ultron_nb.engines.mlflow.center import TAG

    found = ctx.models.versions(name, experiment=ctx.experiment, limit=0)
    return [v for v in found if dict(v.tags or {}).get(TAG + "node") == ctx.node]


def previous_version(ctx: Any, name: str, window: tuple[int, int] | None) -> int | None:
    """The latest version of this node's line trained on an earlier window."""
    from ultron_nb.engines.mlflow.center import TAG

    best = None
    for v in line_versions(ctx, name):
        end = dict(v.tags or {}).get(TAG + "window_end")
        if window is not None and end is not None and int(end) >= window[1]:
            continue  # a later (or this same) window: never warm-start from the future
        best = max(best or 0, int(v.version))
    return best


def _metrics(model: Any, frame: pd.DataFrame, y: Any, prefix: str = "") -> dict[str, float]:
    from ultron_nb.services.stats import binary_metrics

    if not len(frame):
        return {}
    got = binary_metrics(y, click_probability(model, frame))
    return {prefix + k: v for k, v in (("auc", got["auc"]), ("logloss", got["logloss"]))
            if not math.isnan(v)}


def train_online(ctx: Any, *, name: str, input: str = "samples", label: str = "label",
                 time: str = "ts", key: str = "imp_id", lr: float | None = None,
                 holdout: int = 10, epochs: int = 1, alias: str | None = None,
                 model: CtrModel | None = None) -> TrainResult:
    """Train ``name`` on this run's window of ``input`` and register one version (see the
    module docstring). ``lr`` defaults to the node's ``lr`` parameter (else 0.05);
    ``model`` is the first model of a new line (default: a :class:`CtrModel`)."""
    import numpy as np

    rate = float(lr if lr is not None else ctx.params.get("lr", 0.05))
    if not rate > 0:
        raise ConfigError(f"node {ctx.node!r}: train_online: lr must be > 0 (got {rate})")
    window = ctx.window
    rows = window_rows(ctx, input, time=time, window=window)
    if label not in rows.columns:
        raise DataError(f"node {ctx.node!r}: input {input!r} has no label column {label!r}")
    held = holdout_mask(rows, key, holdout)
    train, test = rows[~held], rows[held]
    y_train = train[label].astype(int).to_numpy()
    warm = previous_version(ctx, name, window)
    metrics: dict[str, float] = {}
    if warm is not None:
        current = ctx.models.load(name, version=warm, native=True)
        current.lr = rate
        metrics.update(_metrics(current, rows, rows[label].astype(int), "pre_"))
    elif not len(train):
        log.warning("node %s: window %s has no rows and %s has no earlier version",
                    ctx.node, window, name)
        return TrainResult(None, window, None)
    else:
        current = model if model is not None else CtrModel(rate)
    current.partial_fit(train, y_train, epochs=epochs, window=window)
    metrics.update(_metrics(current, test, test[label].astype(int)))
    counts = {"train": len(train), "holdout": len(test),
              "clicks": int(np.asarray(rows[label]).sum())}
    version = ctx.log_model(current, name=name, metrics=metrics, rows=counts, window=window,
                            alias=alias, params={"lr": rate, "holdout": holdout,
                                                 "epochs": epochs},
                            tags={WARM_TAG: str(warm) if warm else "none"})
    result = TrainResult(version, window, warm, metrics, counts)
    log.info("%s", result)
    return result


__all__ = ["CtrModel", "TrainResult", "click_probability", "holdout_mask", "line_versions",
           "previous_version", "train_online", "window_rows"]
