"""Helpers of the model-loop tests: models trained on a generated click log, a worse one,
the served rows of an experiment, and the nodes of the loop."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ultron_nb.engines.topics import LocalTopic
from ultron_nb.services.datagen import gen_clicklog, parse_ts
from ultron_nb.services.learning import CtrModel

SERVE = '''
def serve(ctx):
    from ultron_nb.services.serving import serve
    serve(ctx, name="ctr_model", requests="requests")
'''
LIVE = '''
def ctr_live(ctx):
    from ultron_nb.services.effect_live import live_ctr
    live_ctr(ctx, input="serve", window="${window}", label_window="5m")
'''
VALIDATE = '''
def validate(ctx):
    from ultron_nb.services.model_checks import validate
    return validate(ctx, input="samples", min_rows=50)
'''
EVALUATE = '''
def evaluate(ctx):
    from ultron_nb.services.model_checks import evaluate
    return evaluate(ctx, input="samples")
'''
TRAIN = '''
def train(ctx):
    from ultron_nb.services.learning import train_online
    return train_online(ctx, name="ctr_model", input="samples")
'''


def stop_everything(ws: Any) -> None:
    """Teardown: stop every experiment of ``ws`` (their node processes) and its daemon."""
    import os
    import signal

    from ultron_nb import experiments
    from ultron_nb.errors import UltronError
    from ultron_nb.scheduler import daemon_status, stop_daemon
    from ultron_nb.store import experiments as repo

    with ws.db.read() as conn:
        names = [e.name for e in repo.list_experiments(conn)]
    for name in names:
        try:
            experiments.stop(ws, name, timeout=30)
        except UltronError:
            pass
    stop_daemon(ws.settings)
    pid = daemon_status(ws.settings)
    if pid and pid > 0:
        os.kill(pid, signal.SIGKILL)




@functools.lru_cache(maxsize=4)
def clicklog(folder: str, seed: int, hours: float, rate: float) -> pd.DataFrame:
    """Labelled impressions of a generated click log (the truth a model learns from)."""
    gen_clicklog(Path(folder), rate=rate, duration=hours * 3600, seed=seed)
    imps = pd.DataFrame(LocalTopic.open(Path(folder) / "impressions").read())
    clicks = pd.DataFrame(LocalTopic.open(Path(folder) / "clicks").read())
    imps["label"] = imps.imp_id.isin(clicks.imp_id).astype(int)
    imps["ts_ms"] = imps.ts.map(parse_ts)
    return imps


def fitted(rows: pd.DataFrame, lr: float = 0.05) -> CtrModel:
    return CtrModel(lr).partial_fit(rows, rows.label)


def reversed_model(model: CtrModel) -> CtrModel:
    """The same model with every weight negated: it ranks the worst items first."""
    import copy

    worse = copy.deepcopy(model)
    worse.sgd.coef_ = -worse.sgd.coef_
    worse.sgd.intercept_ = -worse.sgd.intercept_
    return worse


def topic_rows(path: Path) -> pd.DataFrame:
    if not (path / "_topic.json").is_file():
        return pd.DataFrame()
    return pd.DataFrame(LocalTopic.open(path).read())


def served(ws: Any, experiment: str) -> pd.DataFrame:
    """What ``experiment``'s serving node has served so far (empty before anything)."""
    from ultron_nb.errors import NotFoundError
    from ultron_nb.services.effect import serve_outputs

    try:
        folder = serve_outputs(ws, experiment, "serve")
    except NotFoundError:
        return pd.DataFrame()
    return topic_rows(folder / "served")


def in_traffic(rows: pd.DataFrame, lo: int, hi: int) -> pd.DataFrame:
    from ultron_nb.services.world import bucket_of

    b = bucket_of(rows.user_id)
    return rows[(b >= lo) & (b < hi)]


def version_runs(versions: list[int]) -> list[int]:
    """Consecutive distinct values: [0, 0, 1, 1, 2] → [0, 1, 2]."""
    out: list[int] = []
    for v in versions:
        if not out or out[-1] != v:
            out.append(v)
    return out


def holder_at(history: list[dict[str, Any]], at_ms: int) -> int:
    """The version an alias pointed at, at ``at_ms`` (0 before its first holder)."""
    current = 0
    for entry in history:
        if int(entry["at"]) <= at_ms:
            current = int(entry["version"])
    return current


def bootstrap_auc(y: np.ndarray, p: np.ndarray, n: int = 400, seed: int = 0) -> np.ndarray:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            out.append(roc_auc_score(y[idx], p[idx]))
    return np.asarray(out)
