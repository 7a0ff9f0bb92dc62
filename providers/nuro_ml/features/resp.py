"""A minimal pipelining Redis connection: send pre-encoded RESP, read N replies with hiredis.

redis-py builds a Python object per command and per reply; for bulk feature writes and
low-latency feature reads the commands are already encoded in bulk (see ``redis_format``), so
this connection only moves bytes and lets hiredis (a C parser, installed with ``feast[redis]``)
turn replies into Python objects.
"""

from __future__ import annotations

import socket
import ssl as ssl_module
from dataclasses import dataclass
from typing import Any

import hiredis

from nuro_ml.features.redis_format import resp_command


class RespConnectionError(ConnectionError):
    """The connection to Redis failed, timed out or was closed mid-reply."""


@dataclass(frozen=True)
class RedisEndpoint:
    """Where and how to connect; built from Feast's Redis connection string."""

    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False

    @classmethod
    def from_feast(cls, connection_string: str) -> RedisEndpoint:
        """Parse ``host:port[,db=N][,password=...][,username=...][,ssl=true]`` (Feast's format)."""
        nodes = [c for c in connection_string.split(",") if "=" not in c]
        params: dict[str, str] = {}
        for part in connection_string.split(","):
            if "=" in part:
                k, v = part.split("=", 1)
                params[k.strip()] = v.strip()
        if not nodes:
            raise ValueError(f"Redis connection string {connection_string!r} names no host:port")
        host, _, port = nodes[0].partition(":")
        return cls(
            host=host or "localhost",
            port=int(port or 6379),
            db=int(params.get("db", 0)),
            username=params.get("username"),
            password=params.get("password"),
            ssl=params.get("ssl", "false").lower() in ("true", "1", "yes"),
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}/{self.db}"


class RespConnection:
    """One TCP (or TLS) connection; not thread-safe, reconnects lazily after :meth:`close`."""

    def __init__(
        self, endpoint: RedisEndpoint, *, socket_timeout: float = 10.0, connect_timeout: float = 5.0
    ):
        self.endpoint = endpoint
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._buffer = bytearray(1 << 16)

    def _connect(self) -> socket.socket:
        ep = self.endpoint
        try:
            sock = socket.create_connection((ep.host, ep.port), timeout=self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ep.ssl:
                sock = ssl_module.create_default_context().wrap_socket(sock, server_hostname=ep.host)
            sock.settimeout(self.socket_timeout)
        except OSError as exc:
            raise RespConnectionError(f"Cannot connect to Redis at {ep.address}: {exc}") from exc
        self._sock = sock
        self._reader = hiredis.Reader()
        handshake = b""
        count = 0
        if ep.password is not None:
            args = [b"AUTH"] + ([ep.username.encode()] if ep.username else []) + [ep.password.encode()]
            handshake += resp_command(*args)
            count += 1
        if ep.db:
            handshake += resp_command(b"SELECT", str(ep.db).encode())
            count += 1
        if count:
            for reply in self._roundtrip(handshake, count):
                if isinstance(reply, hiredis.ReplyError):
                    self.close()
                    # The reply text is Redis's (e.g. WRONGPASS); it never contains the password.
                    raise RespConnectionError(f"Redis at {ep.address} refused the handshake: {reply}")
        return sock

    def execute(self, payload: bytes, replies: int) -> list[Any]:
        """Send ``payload`` (``replies`` pipelined commands) and return their replies in order.

        Error replies come back as ``hiredis.ReplyError`` objects; connection failures raise
        :class:`RespConnectionError` after closing the connection, so no stale reply is ever
        read by a later call.
        """
        if self._sock is None:
            self._connect()
        return self._roundtrip(payload, replies)

    def execute_status(self, payload: bytes, replies: int) -> list[str]:
        """Send commands whose replies are single lines (integers, OK) and return the error lines.

        HSET and EXPIRE answer ``:<n>``; counting line ends is all the parsing they need,
        which keeps bulk writes from spending their time building reply objects.
        """
        if self._sock is None:
            self._connect()
        sock = self._sock
        assert sock is not None
        if self._reader is not None and self._reader.gets() is not False:
            self.close()
            raise RespConnectionError(f"Redis at {self.endpoint.address}: unexpected buffered reply")
        chunks: list[bytes] = []
        seen = 0
        try:
            sock.sendall(payload)
            while seen < replies:
                data = sock.recv(1 << 20)
                if not data:
                    raise RespConnectionError(f"Redis at {self.endpoint.address} closed the connection")
                chunks.append(data)
                seen += data.count(b"\r\n")
        except RespConnectionError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise RespConnectionError(f"Redis at {self.endpoint.address}: {exc!r}") from exc
        raw = b"".join(chunks)
        if seen != replies or not raw.endswith(b"\r\n"):
            self.close()
            raise RespConnectionError(
                f"Redis at {self.endpoint.address} sent {seen} reply lines where {replies} were expected"
            )
        if raw.startswith(b"-") or b"\r\n-" in raw:
            return [line.decode(errors="replace") for line in raw.split(b"\r\n") if line.startswith(b"-")]
        return []

    def _roundtrip(self, payload: bytes, replies: int) -> list[Any]:
        sock = self._sock
        reader = self._reader
        assert sock is not None and reader is not None
        out: list[Any] = []
        buf = self._buffer
        try:
            sock.sendall(payload)
            gets = reader.gets
            while len(out) < replies:
                reply = gets()
                if reply is False:
                    # Into a reused buffer: recv(n) would allocate n bytes each time (hiredis copies).
                    size = sock.recv_into(buf)
                    if not size:
                        raise RespConnectionError(f"Redis at {self.endpoint.address} closed the connection")
                    reader.feed(buf, 0, size)
                    continue
                out.append(reply)
        except RespConnectionError:
            self.close()
            raise
        except (OSError, hiredis.ProtocolError) as exc:
            self.close()
            raise RespConnectionError(f"Redis at {self.endpoint.address}: {exc!r}") from exc
        return out

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._reader = None
