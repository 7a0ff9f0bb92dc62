"""Start detached daemons in their own process group, and stop them again by PID only.

Every daemon gets a new session (so its process group id is its PID) and an environment
marker, ``NURO_ML_CLUSTER_ID``; stopping signals the group, then anything that carries the
marker but left the group (task workers, executors, Ray workers in sessions of their own).
Nothing is ever looked up or stopped by process name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

#: Environment variable carried by every process of one local cluster (its unique id).
MARKER_ENV = "NURO_ML_CLUSTER_ID"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def spawn(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session with stdout/stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out, open(os.devnull, "rb") as devnull:
        return subprocess.Popen(
            list(args),
            env=dict(env),
            cwd=cwd,
            stdin=devnull,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _reap(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` for ``pid`` to end (reaping it when it is our child)."""
    try:
        psutil.Process(pid).wait(timeout=timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return not alive(pid)
    return True


def _group_alive(pgid: int) -> bool:
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return False


def stop_group(pid: int, *, grace: float = 20.0, sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the process group led by ``pid``, wait for it, SIGKILL whatever is left after ``grace``."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        _reap(pid, 0.1)
        return
    _reap(pid, grace)
    deadline = time.monotonic() + grace
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid, 5)


def marked_processes(cluster_id: str) -> list[psutil.Process]:
    """Processes whose environment carries this cluster's marker (never the caller itself)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(MARKER_ENV) == cluster_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_marked(cluster_id: str, *, grace: float = 10.0) -> list[int]:
    """Terminate (then kill) every process carrying the marker; returns their PIDs."""
    procs = marked_processes(cluster_id)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, remaining = psutil.wait_procs(procs, timeout=grace)
    for proc in remaining:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(remaining, timeout=grace)
    return [proc.pid for proc in procs]


def wait_until(predicate: Callable[[], bool], what: str, *, timeout: float, interval: float = 0.5) -> None:
    """Poll ``predicate()`` until true; raise ``TimeoutError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
