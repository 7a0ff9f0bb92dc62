"""Redis from the Debian package, in the foreground of its own process group."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nuro_ml.local_cluster.processes import spawn, stop_group


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    pid: int
    password: str | None = None

    @property
    def connection_string(self) -> str:
        """Feast's Redis online-store connection string."""
        base = f"{self.host}:{self.port}"
        return f"{base},password={self.password}" if self.password else base


def start(
    directory: Path,
    port: int,
    *,
    env: Mapping[str, str],
    password: str | None = None,
    append_only: bool = False,
    timeout: float = 20.0,
) -> RedisServer:
    """Start ``redis-server`` on 127.0.0.1:``port`` with its files in ``directory``; wait for PING.

    ``append_only`` keeps every write across a restart (as the compose service does: a stopped
    and restarted online store must not silently lose what the computation cache says is there).
    """
    import redis

    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server not found; install the Debian package redis-server")
    directory.mkdir(parents=True, exist_ok=True)
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "yes" if append_only else "no", "--dir", str(directory)]
    if password:
        args += ["--requirepass", password]
    process = spawn(args, env=env, log=directory / "redis.log")
    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                log = (directory / "redis.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"redis-server on port {port} did not answer PING:\n{log}") from None
            time.sleep(0.05)
    return RedisServer("127.0.0.1", port, process.pid, password)


def stop(server: RedisServer, *, grace: float = 10.0) -> None:
    stop_group(server.pid, grace=grace)
