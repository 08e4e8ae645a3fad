"""Saving a Python model object as an MLflow model directory, and loading one back.

- scikit-learn estimators: the ``sklearn`` flavor (with ``pyfunc``);
- a :class:`mlflow.pyfunc.PythonModel`: the ``pyfunc`` flavor as it is;
- any other object with ``predict_proba`` or ``predict`` (river, a hand-written scorer): a
  pickled object behind a ``pyfunc`` wrapper, so ``mlflow.pyfunc.load_model`` serves it and
  :func:`load_native` gives the object back.

Requirements are given explicitly, so saving never runs MLflow's requirement inference (a
subprocess that imports the model: seconds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc

from ultron_nb.errors import ConfigError

FLAVORS = ("auto", "sklearn", "pyfunc", "pickle")


class PickledModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A pyfunc wrapper around any object that predicts."""

    # MLflow reads the type hint of ``predict`` as an input schema when a subclass is defined,
    # and warns whether the hint is ``Any`` or missing; every node run importing this module
    # printed that warning. This wrapper takes whatever its model takes: MLflow's own switch
    # skips that reading (tests/engines/mlflow/test_flavors.py fails if it stops working).
    _skip_type_hint_validation = True

    def __init__(self, model: Any):
        self.model = model

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        proba = getattr(self.model, "predict_proba", None)
        if callable(proba):
            out = proba(model_input)
            shape = getattr(out, "shape", ())
            return out[:, 1] if len(shape) == 2 and shape[1] == 2 else out
        return self.model.predict(model_input)


def _is_sklearn(model: Any) -> bool:
    return type(model).__module__.split(".")[0] == "sklearn"


def flavor_of(model: Any, flavor: str = "auto") -> str:
    if flavor not in FLAVORS:
        raise ConfigError(f"log_model flavor {flavor!r}: one of {', '.join(FLAVORS)}")
    if flavor != "auto":
        return flavor
    if _is_sklearn(model):
        return "sklearn"
    if isinstance(model, mlflow.pyfunc.PythonModel):
        return "pyfunc"
    return "pickle"


def check(model: Any, flavor: str = "auto") -> str:
    """The flavor ``model`` will be saved with, or a :class:`ConfigError` saying why not."""
    chosen = flavor_of(model, flavor)
    if chosen != "sklearn" and not (callable(getattr(model, "predict", None))
                                    or callable(getattr(model, "predict_proba", None))):
        raise ConfigError(f"log_model: a {type(model).__name__} has no predict or "
                          "predict_proba method (pass path= for a saved MLflow model)")
    return chosen


def save(model: Any, path: Path, flavor: str = "auto") -> str:
    """Save ``model`` as an MLflow model directory at ``path``; the flavor used."""
    chosen = check(model, flavor)
    if chosen == "sklearn":
        from mlflow import sklearn as mlflow_sklearn

        mlflow_sklearn.save_model(
            model, str(path), serialization_format="cloudpickle",
            pip_requirements=mlflow_sklearn.get_default_pip_requirements(True))
    else:
        wrapped = model if chosen == "pyfunc" else PickledModel(model)
        mlflow.pyfunc.save_model(str(path), python_model=wrapped,
                                 pip_requirements=["mlflow", "cloudpickle"])
    return chosen


def load_native(path: str) -> Any:
    """The model object saved at ``path``: the estimator, the PythonModel, or the pickled
    object itself."""
    from mlflow.models import Model

    flavors = Model.load(path).flavors
    if "sklearn" in flavors:
        from mlflow import sklearn as mlflow_sklearn

        return mlflow_sklearn.load_model(path)
    loaded = mlflow.pyfunc.load_model(path)
    inner = loaded.unwrap_python_model() if hasattr(loaded, "unwrap_python_model") else None
    if isinstance(inner, PickledModel):
        return inner.model
    return inner if inner is not None else loaded


def load_pyfunc(path: str) -> Any:
    return mlflow.pyfunc.load_model(path)
