"""S3-API object storage (AWS S3, MinIO, Ceph RGW) for training shards, from an Airflow connection.

Connection fields: ``login`` is the access key id, ``password`` the secret access key; extras
``endpoint_url`` (for non-AWS endpoints) and ``region_name``. Without a connection, boto3's own
chain applies (environment variables, instance profile).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk.bases.hook import BaseHook


class ObjectStorageHook(BaseHook):
    """
    Builds boto3 S3 clients from an Airflow connection.

    :param aws_conn_id: Connection with the access key (login), secret key (password) and the
        ``endpoint_url`` / ``region_name`` extras; None uses boto3's default credential chain.
    :param endpoint_url: Endpoint that overrides the connection's ``endpoint_url`` extra.
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = "aws_default"
    conn_type = "aws"
    hook_name = "Object storage (S3 API)"

    def __init__(
        self, aws_conn_id: str | None = default_conn_name, *, endpoint_url: str | None = None
    ) -> None:
        super().__init__()
        self.aws_conn_id = aws_conn_id
        self._endpoint_url = endpoint_url

    @cached_property
    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.aws_conn_id:
            conn = self.get_connection(self.aws_conn_id)
            extras = conn.extra_dejson
            if conn.login:
                kwargs["aws_access_key_id"] = conn.login
            if conn.password:
                kwargs["aws_secret_access_key"] = conn.password
            if extras.get("endpoint_url"):
                kwargs["endpoint_url"] = extras["endpoint_url"]
            if extras.get("region_name"):
                kwargs["region_name"] = extras["region_name"]
        if self._endpoint_url:
            kwargs["endpoint_url"] = self._endpoint_url
        return kwargs

    def get_client(self) -> Any:
        import boto3

        return boto3.client("s3", **self.client_kwargs)

    def job_environment(self) -> dict[str, str]:
        """Standard AWS environment variables that give a remote job (Ray) the same access."""
        kwargs = self.client_kwargs
        names = {
            "aws_access_key_id": "AWS_ACCESS_KEY_ID",
            "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
            "endpoint_url": "AWS_ENDPOINT_URL_S3",
            "region_name": "AWS_DEFAULT_REGION",
        }
        return {env: str(kwargs[key]) for key, env in names.items() if kwargs.get(key)}
