"""S3-API object storage (AWS S3, MinIO, Ceph RGW) for training shards, from an Airflow connection.

Connection fields: ``login`` is the access key id, ``password`` the secret access key; extras
``endpoint_url`` (for non-AWS endpoints) and ``region_name``. Without a connection, boto3's own
chain applies (environment variables, instance profile).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk.bases.hook import BaseHook

from nuro_ml.clients.aws import AwsSettings
from nuro_ml.hooks.connections import AirflowConnections


class ObjectStorageHook(BaseHook):
    """
    Builds boto3 S3 clients (:class:`~nuro_ml.clients.aws.AwsSettings`) from an Airflow connection.

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
    def settings(self) -> AwsSettings:
        """The connection's credentials, region and endpoint (secrets registered with the masker)."""
        conn = AirflowConnections().connection(self.aws_conn_id) if self.aws_conn_id else None
        return AwsSettings.from_fields(conn, endpoint_url=self._endpoint_url)

    @property
    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``boto3.client("s3", ...)`` that only the connection or hook set."""
        names = {
            "aws_access_key_id": self.settings.access_key_id,
            "aws_secret_access_key": self.settings.secret_access_key,
            "aws_session_token": self.settings.session_token,
            "endpoint_url": self.settings.endpoint_url,
            "region_name": self.settings.region_name,
        }
        return {key: value for key, value in names.items() if value}

    def get_client(self) -> Any:
        return self.settings.client("s3")

    def job_environment(self) -> dict[str, str]:
        """Standard AWS environment variables that give a remote job (Ray) the same access."""
        return self.settings.environment()
