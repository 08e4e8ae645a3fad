"""Importing the toolkit's MLflow model wrapper says nothing to the user: MLflow warns when a
``PythonModel`` class is defined, about its ``predict`` type hint, and every node run that
imports the wrapper used to print that warning into its log."""

from __future__ import annotations

import subprocess
import sys

IMPORT = """
import warnings
import mlflow.pyfunc  # MLflow's own import-time warnings are not the wrapper's
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    import ultron_nb.engines.mlflow.flavors
for w in seen:
    print(w.category.__name__, w.filename, w.message)
"""


def test_importing_the_model_wrapper_warns_nothing() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT], capture_output=True, text=True,
                          timeout=120)  # a fresh interpreter: MLflow warns once per class
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "", done.stdout
