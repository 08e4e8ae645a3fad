"""The Flink engine: a local session cluster, the REST client, generated DDL, submission.

Nothing here imports ``pyflink`` at import time: the JVM gateway is started only when a job is
compiled or submitted (:mod:`ultron_nb.engines.flink.submit`).
"""

from ultron_nb.engines.flink.cluster import ClusterStatus, LocalCluster, cluster_status
from ultron_nb.engines.flink.rest import FlinkRest, JobInfo

__all__ = ["ClusterStatus", "FlinkRest", "JobInfo", "LocalCluster", "cluster_status"]
