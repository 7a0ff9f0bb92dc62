"""Where and how to reach a cluster: hook arguments merged with the ``slurm`` connection."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nuro_ml.exceptions import SlurmJobError
from nuro_ml.slurm.rest import REST_API_VERSION
from nuro_ml.slurm.rest_client import SlurmRestClient


class Connection(Protocol):
    """The fields of a ``slurm`` connection read here (an Airflow ``Connection`` has them)."""

    @property
    def login(self) -> str | None: ...

    @property
    def password(self) -> str | None: ...

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


#: The extras a ``slurm`` connection may carry; anything else is a typo worth reporting.
CONNECTION_EXTRAS = frozenset({"slurm_conf", "partition", "account", "rest_url", "rest_api_version"})


@dataclass(frozen=True)
class SlurmClusterSettings:
    """Where and how to reach the cluster, merged from hook arguments and the connection."""

    slurm_conf: str | None = None
    partition: str | None = None
    account: str | None = None
    rest_url: str | None = None
    rest_user: str | None = field(default=None, repr=False)
    rest_token: str | None = field(default=None, repr=False)
    rest_api_version: str = REST_API_VERSION

    def rest_client(self, timeout: float) -> SlurmRestClient | None:
        if not self.rest_url:
            return None
        return SlurmRestClient(
            self.rest_url,
            user=self.rest_user,
            token=self.rest_token,
            api_version=self.rest_api_version,
            timeout=timeout,
        )


def merge_settings(
    conn: Connection | None,
    *,
    conn_id: str | None,
    slurm_conf: str | None = None,
    partition: str | None = None,
    account: str | None = None,
) -> SlurmClusterSettings:
    """Constructor arguments win over connection extras; CLI and slurmrestd exclude each other.

    :param conn: the ``slurm`` connection, or None when the hook has no connection id.
    :param conn_id: the connection id, named in error messages.
    :param slurm_conf: slurm.conf path given to the hook; overrides the connection's.
    :param partition: default partition given to the hook; overrides the connection's.
    :param account: default account given to the hook; overrides the connection's.
    """
    extras: dict[str, Any] = dict(conn.extra_dejson) if conn is not None else {}
    unknown = sorted(set(extras) - CONNECTION_EXTRAS)
    if unknown:
        raise SlurmJobError(
            f"connection {conn_id!r}: unknown extra field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(CONNECTION_EXTRAS))}"
        )
    slurm_conf = slurm_conf or extras.get("slurm_conf") or None
    rest_url = extras.get("rest_url") or None
    if slurm_conf and rest_url:
        raise SlurmJobError(
            f"connection {conn_id!r}: give either slurm_conf (Slurm commands) or "
            "rest_url (slurmrestd), not both"
        )
    if slurm_conf and not Path(slurm_conf).is_file():
        raise SlurmJobError(
            f"slurm.conf {slurm_conf} (from connection {conn_id!r} or hook argument) does not exist"
        )
    return SlurmClusterSettings(
        slurm_conf=slurm_conf,
        partition=partition or extras.get("partition") or None,
        account=account or extras.get("account") or None,
        rest_url=rest_url,
        rest_user=(conn.login or None) if conn is not None else None,
        rest_token=(conn.password or None) if conn is not None else None,
        rest_api_version=extras.get("rest_api_version") or REST_API_VERSION,
    )
