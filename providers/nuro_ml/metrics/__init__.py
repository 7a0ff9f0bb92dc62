"""Prometheus metrics: the series catalogue, the ledger collector and the task metrics path."""
