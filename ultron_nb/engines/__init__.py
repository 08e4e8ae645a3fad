"""Adapters to the engines that run nodes: Flink, DuckDB and Python."""
