"""AWS sessions with no Airflow: boto3, from a named connection or boto3's own credential chain."""

from __future__ import annotations

from typing import Any

from nuro_ml.clients import connections
from nuro_ml.clients.connections import ConnectionFields


def session_from_fields(conn: ConnectionFields | None, *, region_name: str | None = None) -> Any:
    """A ``boto3`` session: the connection's access key (login), secret (password) and the
    ``aws_session_token``/``region_name`` extras; without a connection, boto3's default chain.

    A ``region_name`` extra beats ``region_name``.
    """
    import boto3

    if conn is None:
        return boto3.session.Session(region_name=region_name)
    extra = conn.extra_dejson
    return boto3.session.Session(
        aws_access_key_id=conn.login or None,
        aws_secret_access_key=conn.password or None,
        aws_session_token=extra.get("aws_session_token"),
        region_name=extra.get("region_name", region_name),
    )


def session(aws_conn_id: str | None = None, *, region_name: str | None = None) -> Any:
    """A ``boto3`` session for ``aws_conn_id`` (resolved by :mod:`nuro_ml.clients.connections`)."""
    conn = connections.resolver().connection(aws_conn_id) if aws_conn_id else None
    return session_from_fields(conn, region_name=region_name)
