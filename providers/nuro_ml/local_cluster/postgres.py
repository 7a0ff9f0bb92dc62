"""PostgreSQL from the Debian package: a fresh data directory, a free port, users and databases.

As root the server runs as the ``postgres`` user (initdb refuses root); host connections use
scram-sha-256, so passwords are really checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nuro_ml.local_cluster.processes import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresError(RuntimeError):
    """The server could not be set up, started or stopped."""


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(args: list[str], what: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PostgresError(f"{what} failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3 driver)."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        """libpq connection string, as Terraform's pg backend and psycopg take it."""
        return (
            f"postgres://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}?sslmode=disable"
        )

    def create_database(self, name: str) -> str:
        """Create a database owned by the server's user (if missing); return its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(
            f"host={self.host} port={self.port} user={self.user} password={self.password} dbname=postgres",
            autocommit=True,
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{name}" OWNER "{self.user}"')
        return self.url_for(name)


def init_cluster(data: Path) -> None:
    """``initdb`` into the empty directory ``data`` (owned by ``postgres`` when running as root)."""
    initdb = PG_BIN / "initdb"
    if not initdb.exists():
        raise PostgresError(f"PostgreSQL server binaries not found in {PG_BIN}; install postgresql-15")
    data.mkdir(parents=True, exist_ok=True)
    if _as_postgres():
        shutil.chown(data, "postgres", "postgres")
    data.chmod(0o700)
    _run(
        [
            *_as_postgres(),
            str(initdb),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
        ],
        "initdb",
    )


def start(data: Path, port: int) -> int:
    """Start the server of ``data`` on 127.0.0.1:``port``; returns the postmaster PID."""
    _run(
        [
            *_as_postgres(),
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "pg.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            "start",
        ],
        "pg_ctl start",
    )
    return postmaster_pid(data) or 0


def postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def create_user(port: int, user: str, password: str, database: str) -> PostgresServer:
    """Create a login role with CREATEDB and its own database, over the local trust socket."""
    escaped = password.replace("'", "''")
    _run(
        [
            "psql",
            "-h",
            "/tmp",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"CREATE USER {user} WITH PASSWORD '{escaped}' CREATEDB",
            "-c",
            f"CREATE DATABASE {database} OWNER {user}",
        ],
        "create user",
    )
    return PostgresServer("127.0.0.1", port, user, password, database)


def stop(data: Path) -> None:
    """Fast shutdown (clients are disconnected); a server that is not running is fine."""
    subprocess.run(
        [*_as_postgres(), str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
        capture_output=True,
        check=False,
    )


@contextmanager
def temporary_server(
    user: str, password: str, database: str, *, prefix: str = "nuro-pg-"
) -> Iterator[PostgresServer]:
    """A throw-away server in a fresh directory on a free port, with one user and its database;
    stopped and deleted on exit (tests and benchmarks)."""
    data = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        init_cluster(data)
        port = free_port()
        start(data, port)
        try:
            yield create_user(port, user, password, database)
        finally:
            stop(data)
    finally:
        shutil.rmtree(data, ignore_errors=True)
