"""AWS access with no Airflow: boto3 sessions and clients from a named connection or boto3's own chain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nuro_ml.clients import connections
from nuro_ml.clients.connections import ConnectionFields

#: Settings -> the standard environment variables that give another process the same access.
_ENVIRONMENT = {
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
    "endpoint_url": "AWS_ENDPOINT_URL_S3",
    "region_name": "AWS_DEFAULT_REGION",
}


@dataclass(frozen=True)
class AwsSettings:
    """Credentials, region and endpoint; a field left None falls back to boto3's default chain."""

    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region_name: str | None = None
    #: Endpoint of an S3-compatible store (MinIO, moto); None is AWS itself.
    endpoint_url: str | None = None

    @classmethod
    def from_fields(
        cls,
        conn: ConnectionFields | None,
        *,
        region_name: str | None = None,
        endpoint_url: str | None = None,
    ) -> AwsSettings:
        """Access key (login), secret (password), extras ``aws_session_token``, ``region_name`` and
        ``endpoint_url``. The connection's ``region_name`` beats ``region_name``; ``endpoint_url``
        beats the connection's."""
        if conn is None:
            return cls(region_name=region_name, endpoint_url=endpoint_url)
        extra = conn.extra_dejson
        return cls(
            access_key_id=conn.login or None,
            secret_access_key=conn.password or None,
            session_token=extra.get("aws_session_token") or None,
            region_name=extra.get("region_name") or region_name,
            endpoint_url=endpoint_url or extra.get("endpoint_url") or None,
        )

    def session(self) -> Any:
        """A ``boto3`` session with these credentials."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            region_name=self.region_name,
        )

    def client(self, service: str) -> Any:
        """A ``boto3`` client of ``service`` (``"s3"``, ``"ec2"``...) at :attr:`endpoint_url`."""
        return self.session().client(service, endpoint_url=self.endpoint_url)

    def environment(self) -> dict[str, str]:
        """The standard AWS environment variables that give another process (a Ray job) this access."""
        return {env: str(getattr(self, name)) for name, env in _ENVIRONMENT.items() if getattr(self, name)}


def settings(
    aws_conn_id: str | None = None, *, region_name: str | None = None, endpoint_url: str | None = None
) -> AwsSettings:
    """Settings for ``aws_conn_id`` (resolved by :mod:`nuro_ml.clients.connections`), or boto3's chain."""
    conn = connections.resolver().connection(aws_conn_id) if aws_conn_id else None
    return AwsSettings.from_fields(conn, region_name=region_name, endpoint_url=endpoint_url)
