"""Spark fixtures for the ETL tests (shared session, standalone cluster)."""

from tests.fixtures.spark import spark_session, spark_standalone  # noqa: F401
