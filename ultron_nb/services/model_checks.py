"""Validate and evaluate model versions, from nodes fired by the registry's events.

Both are called from a Python node with an ``--on-model NAME`` edge (the version is the
event's)::

    def validate(ctx):
        from ultron_nb.services.model_checks import validate
        return validate(ctx, input="samples")

**validate** is a gate: it scores the candidate and the current champion (the alias as this
experiment resolves it: its own, else its parent's) on the same *held-out* rows — the rows
of the candidate's training window that no version trains on (``key % holdout == 0``, the
rule of :func:`ultron_nb.services.learning.train_online`) — and moves the experiment's
alias to the candidate only when its AUC is not below the champion's by more than
``tolerance`` and its log loss not above by more than ``max_logloss_increase`` (with no
champion yet: when it beats chance). The verdict is recorded either way: version tags
``ultron.validate`` (``passed`` / ``refused``) and ``ultron.validate.reason``, metrics
``validate_*`` on the version's run, and an event ``validate/<name>``.

**evaluate** scores a version on the held-out rows of the most recent ``recent`` of event
time and logs AUC (with its DeLong interval), log loss, the expected calibration error, the
observed and predicted click rates (``eval_*`` metrics on the version's run) and the
reliability table (artifact ``evaluate/calibration.json``); event ``evaluate/<name>``.

Both skip a version of another experiment's line (a clone's nodes also hear their parent's
versions; each experiment judges its own), and one registered by a plain MLflow client
(no lineage) is checked like the experiment's own.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ultron_nb.errors import ConfigError, NotFoundError
from ultron_nb.events.model_keys import parse_key

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

VALIDATE_TAG = "ultron.validate"


@dataclass
class Candidate:
    """The version an ``--on-model`` run is about."""

    name: str
    version: int
    experiment: str | None  # its lineage experiment (None: another client's)
    window: tuple[int, int] | None
    run_id: str | None


def candidate(ctx: Any, name: str | None = None) -> Candidate:
    """The model version whose registry event fired this run."""
    from ultron_nb.engines.mlflow.center import TAG
    from ultron_nb.engines.mlflow.registry import get_version

    event = ctx.trigger.get("event") or {}
    parsed = parse_key(str(event.get("key", "")))
    value = event.get("value") or {}
    if not parsed or parsed[1] is not None or "version" not in value:
        raise ConfigError(f"node {ctx.node!r}: not fired by a model version (give it "
                          "--on-model NAME)")
    model = name or parsed[0]
    number = int(value["version"])
    info = get_version(ctx.models.client, model, number)
    if info is None:
        raise NotFoundError(f"model {model!r} has no version {number} (deleted?)")
    tags = info.tags
    window = None
    if TAG + "window_start" in tags and TAG + "window_end" in tags:
        window = int(tags[TAG + "window_start"]), int(tags[TAG + "window_end"])
    return Candidate(model, number, tags.get(TAG + "experiment"), window, info.run_id)


def _foreign(ctx: Any, cand: Candidate) -> bool:
    if cand.experiment is not None and cand.experiment != ctx.experiment:
        log.info("%s version %d belongs to experiment %s's line: %s leaves it to it",
                 cand.name, cand.version, cand.experiment, ctx.experiment)
        return True
    return False


def held_out(ctx: Any, input: str, *, window: tuple[int, int] | None, recent: str,
             label: str, key: str, holdout: int, time: str = "ts") -> pd.DataFrame:
    """The held-out rows of ``window`` (default: the most recent ``recent`` of event time)."""
    import pandas as pd

    from ultron_nb.flow.edges import parse_interval
    from ultron_nb.services.learning import holdout_mask, window_rows

    if window is None:
        span = parse_interval(recent)
        if not span:
            raise ConfigError(f"node {ctx.node!r}: recent={recent!r} is no interval (1h, 30m)")
        frame = ctx.input_frame(input)
        if not len(frame):
            return frame
        end = pd.to_datetime(frame[time]).max()
        end_ms = int(end.value // 1_000_000) + 1
        window = (end_ms - int(span * 1000), end_ms)
    rows = window_rows(ctx, input, time=time, window=window)
    if label not in rows.columns:
        raise ConfigError(f"node {ctx.node!r}: input {input!r} has no label column {label!r}")
    return rows[holdout_mask(rows, key, holdout)] if holdout else rows


def _score(ctx: Any, name: str, version: int, rows: pd.DataFrame) -> Any:
    from ultron_nb.services.learning import click_probability

    return click_probability(ctx.models.load(name, version=version, native=True), rows)


def _log_to_version(ctx: Any, cand: Candidate, metrics: dict[str, float],
                    tags: dict[str, str]) -> None:
    import time

    from mlflow.entities import Metric

    client = ctx.models.client
    now = int(time.time() * 1000)
    finite = {k: float(v) for k, v in metrics.items() if not math.isnan(float(v))}
    if cand.run_id:
        client.log_batch(cand.run_id, metrics=[Metric(k, v, now, 0)
                                               for k, v in finite.items()])
    for key, value in tags.items():
        client.set_model_version_tag(cand.name, str(cand.version), key, value)


# ----------------------------------------------------------------------------- validate
@dataclass
class Verdict:
    """What validate decided about one version."""

    name: str
    version: int
    passed: bool | None  # None: skipped (another experiment's line)
    reason: str
    champion: int | None = None
    alias: str | None = None  # the registry alias moved to it
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "passed": self.passed, "reason": self.reason,
                "champion": self.champion, "alias": self.alias,
                "metrics": {k: v for k, v in self.metrics.items() if not math.isnan(v)}}

    def __str__(self) -> str:
        what = {True: "passed", False: "refused", None: "skipped"}[self.passed]
        return f"validate {self.name} version {self.version}: {what} ({self.reason})"


def _decide(cand_m: dict[str, float], champ_m: dict[str, float] | None, champion: int | None,
            *, tolerance: float, max_logloss_increase: float) -> tuple[bool, str]:
    rows = int(cand_m["rows"])
    if champ_m is None:
        if cand_m["auc"] > 0.5:
            return True, f"no champion yet; AUC {cand_m['auc']:.4f} > 0.5 on {rows} rows"
        return False, (f"no champion yet, and AUC {cand_m['auc']:.4f} does not beat chance "
                       f"on {rows} held-out rows")
    if cand_m["auc"] < champ_m["auc"] - tolerance:
        return False, (f"AUC {cand_m['auc']:.4f} < champion v{champion}'s "
                       f"{champ_m['auc']:.4f} - {tolerance:g} on {rows} held-out rows")
    if cand_m["logloss"] > champ_m["logloss"] + max_logloss_increase:
        return False, (f"log loss {cand_m['logloss']:.4f} > champion v{champion}'s "
                       f"{champ_m['logloss']:.4f} + {max_logloss_increase:g} on {rows} "
                       "held-out rows")
    return True, (f"AUC {cand_m['auc']:.4f} vs champion v{champion}'s {champ_m['auc']:.4f}, "
                  f"log loss {cand_m['logloss']:.4f} vs {champ_m['logloss']:.4f} on {rows} "
                  "held-out rows")


def validate(ctx: Any, name: str | None = None, *, input: str = "samples",
             label: str = "label", key: str = "imp_id", holdout: int = 10,
             alias: str = "champion", tolerance: float = 0.0,
             max_logloss_increase: float = 0.01, min_rows: int = 100,
             recent: str = "1h") -> Verdict:
    """Gate the version that fired this run against the champion (module docstring)."""
    from ultron_nb.services.stats import binary_metrics

    cand = candidate(ctx, name)
    if _foreign(ctx, cand):
        return Verdict(cand.name, cand.version, None, f"a version of {cand.experiment}")
    rows = held_out(ctx, input, window=cand.window, recent=recent, label=label, key=key,
                    holdout=holdout)
    y = rows[label].astype(int).to_numpy()
    champion: int | None
    try:
        champion, _ = ctx.models.resolve(cand.name, alias)
    except NotFoundError:
        champion = None
    metrics: dict[str, float] = {"validate_rows": float(len(rows))}
    if champion == cand.version:
        verdict = Verdict(cand.name, cand.version, True, f"already the {alias}", champion)
    elif len(rows) < min_rows or y.sum() == 0 or y.sum() == len(y):
        verdict = Verdict(cand.name, cand.version, False,
                          f"too few held-out rows to judge ({len(rows)} rows, {int(y.sum())} "
                          f"clicks; at least {min_rows} with both classes)", champion)
    else:
        cand_m = binary_metrics(y, _score(ctx, cand.name, cand.version, rows))
        champ_m = binary_metrics(y, _score(ctx, cand.name, champion, rows)) \
            if champion is not None else None
        metrics.update(validate_auc=cand_m["auc"], validate_logloss=cand_m["logloss"])
        if champ_m is not None:
            metrics.update(validate_champion_auc=champ_m["auc"],
                           validate_champion_logloss=champ_m["logloss"])
        passed, reason = _decide(cand_m, champ_m, champion, tolerance=tolerance,
                                 max_logloss_increase=max_logloss_increase)
        verdict = Verdict(cand.name, cand.version, passed, reason, champion)
    verdict.metrics = metrics
    if verdict.passed and champion != cand.version:
        verdict.alias = ctx.models.promote(cand.name, cand.version, alias,
                                           by=f"{ctx.experiment}/{ctx.node}")
    _log_to_version(ctx, cand, metrics, {
        VALIDATE_TAG: "passed" if verdict.passed else "refused",
        VALIDATE_TAG + ".reason": verdict.reason[:5000],
        VALIDATE_TAG + ".champion": str(champion) if champion is not None else "none",
        VALIDATE_TAG + ".by": f"{ctx.experiment}/{ctx.node}"})
    ctx.send_event(f"validate/{cand.name}", {**verdict.to_dict(),
                                             "experiment": ctx.experiment})
    log.info("%s", verdict)
    return verdict


# ----------------------------------------------------------------------------- evaluate
def evaluate(ctx: Any, name: str | None = None, *, input: str = "samples",
             label: str = "label", key: str = "imp_id", holdout: int = 10,
             recent: str = "1h", bins: int = 10) -> dict[str, float]:
    """Score the version that fired this run on recent held-out rows and log the metrics
    to it (module docstring); the metrics ({} when skipped)."""
    from ultron_nb.services.stats import auc_interval, binary_metrics, calibration

    cand = candidate(ctx, name)
    if _foreign(ctx, cand):
        return {}
    rows = held_out(ctx, input, window=None, recent=recent, label=label, key=key,
                    holdout=holdout)
    y = rows[label].astype(int).to_numpy()
    p = _score(ctx, cand.name, cand.version, rows) if len(rows) else []
    got = binary_metrics(y, p)
    auc = auc_interval(y, p)
    ece, table = calibration(y, p, bins)
    metrics = {"eval_auc": got["auc"], "eval_auc_low": auc.low, "eval_auc_high": auc.high,
               "eval_logloss": got["logloss"], "eval_ece": ece, "eval_rows": got["rows"],
               "eval_rate": got["rate"], "eval_mean_p": got["mean_p"]}
    _log_to_version(ctx, cand, metrics, {
        "ultron.evaluate": f"AUC {got['auc']:.4f}, log loss {got['logloss']:.4f}, ECE "
                           f"{ece:.4f} on {len(rows)} held-out rows of the last {recent}"})
    if cand.run_id:
        ctx.models.client.log_dict(cand.run_id, {"bins": table, "rows": len(rows),
                                                 "recent": recent},
                                   "evaluate/calibration.json")
    shown = {k: v for k, v in metrics.items() if not math.isnan(v)}
    ctx.send_event(f"evaluate/{cand.name}", {"version": cand.version, "metrics": shown,
                                             "experiment": ctx.experiment})
    log.info("evaluate %s version %d: %s", cand.name, cand.version, shown)
    return shown


__all__ = ["Candidate", "Verdict", "candidate", "evaluate", "held_out", "validate"]
