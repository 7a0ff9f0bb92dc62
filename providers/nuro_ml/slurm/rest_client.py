"""The slurmrestd HTTP client (JWT over HTTP(S), or local auth on a unix socket)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from nuro_ml.exceptions import SlurmCommandError, SlurmJobError
from nuro_ml.slurm.rest import REST_API_VERSION, rest_error_text


class SlurmRestClient:
    """
    Minimal slurmrestd client: the five calls the hooks need, sync and async.

    :param url: ``http(s)://host:port`` (JWT auth) or ``unix:/path/to/slurmrestd.sock`` (local
        auth: the socket's peer credentials identify the user).
    :param user: value of ``X-SLURM-USER-NAME``.
    :param token: JWT for ``X-SLURM-USER-TOKEN``; never logged.
    :param api_version: OpenAPI plug-in version in the paths, e.g. ``v0.0.38``.
    :param timeout: seconds per request.
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        token: str | None = None,
        api_version: str = REST_API_VERSION,
        timeout: float = 60.0,
    ) -> None:
        if url.startswith("unix:"):
            self._socket: str | None = url.removeprefix("unix:").removeprefix("//")
            self.base_url = "http://slurmrestd"
        elif url.startswith(("http://", "https://")):
            self._socket = None
            self.base_url = url.rstrip("/")
        else:
            raise SlurmJobError(f"slurmrestd url {url!r} must start with http://, https:// or unix:")
        self.url = url
        self.api_version = api_version
        self.timeout = timeout
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["X-SLURM-USER-TOKEN"] = token
        if user:
            self._headers["X-SLURM-USER-NAME"] = user

    def path(self, suffix: str) -> str:
        return f"/slurm/{self.api_version}/{suffix}"

    def _client_args(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "headers": self._headers, "timeout": self.timeout}

    def _decode(self, method: str, suffix: str, response: httpx.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise SlurmCommandError(
                [method, self.path(suffix)],
                response.status_code,
                response.text[:500],
                outcome=f"returned HTTP {response.status_code} without a JSON body",
            )
        if payload.get("errors") or response.status_code >= 400:
            raise SlurmCommandError(
                [method, self.path(suffix)],
                response.status_code,
                rest_error_text(payload) or response.text[:500],
                outcome=f"returned HTTP {response.status_code}",
                payload=payload,
            )
        return payload

    def request(self, method: str, suffix: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        transport = httpx.HTTPTransport(uds=self._socket) if self._socket else None
        try:
            with httpx.Client(transport=transport, **self._client_args()) as client:
                response = client.request(method, self.path(suffix), json=body)
        except httpx.HTTPError as err:
            raise SlurmCommandError([method, self.path(suffix)], None, str(err), outcome="failed") from err
        return self._decode(method, suffix, response)

    async def arequest(
        self, method: str, suffix: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        transport = httpx.AsyncHTTPTransport(uds=self._socket) if self._socket else None
        try:
            async with httpx.AsyncClient(transport=transport, **self._client_args()) as client:
                response = await client.request(method, self.path(suffix), json=body)
        except httpx.HTTPError as err:
            raise SlurmCommandError([method, self.path(suffix)], None, str(err), outcome="failed") from err
        return self._decode(method, suffix, response)
