"""MLflow as the model center's engine: the store a workspace uses, the registry read for
change, and the MLflow UI process. Every module imports ``mlflow`` lazily (it costs over a
second), and every client is bound to explicit URIs: never the process-global tracking URI.
"""
