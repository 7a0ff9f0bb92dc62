"""Start, find and stop the telemetry stream's driver: the process the Airflow operators manage.

The stream runs as its own long-lived Spark application, detached from whoever started it (a
new session, output to ``<state_dir>/stream.log``), so killing a supervising task never stops it.
``<state_dir>/launch.json`` records the driver's pid, command and checkpoint. A pid counts as the
stream only while ``/proc/<pid>/cmdline`` still names the stream job and this state folder, so a
recycled pid is never mistaken for it (or signalled).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nuro_ml.etl.stream_progress import LAUNCH_FILE, StreamProgress, now_iso, pid_alive, write_json_atomic
from nuro_ml.stream.job import StreamJobConfig

JOB_MODULE = "nuro_ml.stream.job"
LOG_FILE = "stream.log"


class StreamLaunchError(RuntimeError):
    """The stream's driver did not come up; the message carries the end of its log."""


@dataclass
class Launch:
    """What the start operator recorded about a driver."""

    pid: int
    command: list[str]
    started_at: str
    checkpoint: str
    state_dir: str
    log: str

    @classmethod
    def read(cls, state_dir: str | Path) -> Launch | None:
        try:
            return cls(**json.loads((Path(state_dir) / LAUNCH_FILE).read_text()))
        except FileNotFoundError:
            return None

    def write(self) -> None:
        write_json_atomic(Path(self.state_dir) / LAUNCH_FILE, asdict(self))


def _is_stream(pid: int, state_dir: str) -> bool:
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return JOB_MODULE.replace(".", "/") in cmdline.replace(".", "/") and state_dir in cmdline


def running(state_dir: str | Path) -> Launch | None:
    """The launch record of the stream's driver if it runs now."""
    launch = Launch.read(state_dir)
    if launch is not None and _is_stream(launch.pid, str(state_dir)):
        return launch
    return None


def command(cfg: StreamJobConfig, spark_submit: str | None = None) -> list[str]:
    """The driver's command: this interpreter, or ``spark-submit`` to a cluster master."""
    if spark_submit is None:
        return [sys.executable, "-m", JOB_MODULE, *cfg.to_args()]
    import nuro_ml.stream.job as module

    return [spark_submit, "--name", "nuro-ml-telemetry-stream", module.__file__ or "", *cfg.to_args()]


def start(
    cfg: StreamJobConfig, *, spark_submit: str | None = None, env: dict[str, str] | None = None
) -> Launch:
    """Start a detached driver for ``cfg`` (callers check :func:`running` first)."""
    state = Path(cfg.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    cmd = command(cfg, spark_submit)
    log_path = state / LOG_FILE
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=str(state),
        )
    launch = Launch(
        pid=proc.pid,
        command=cmd,
        started_at=now_iso(),
        checkpoint=cfg.checkpoint_path,
        state_dir=cfg.state_dir,
        log=str(log_path),
    )
    launch.write()
    return launch


def wait_started(launch: Launch, queries: list[str], timeout: float) -> StreamProgress:
    """Wait until the driver reports every query started; raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        progress = StreamProgress.read(launch.state_dir)
        if (
            progress is not None
            and progress.pid == launch.pid
            and all(q in progress.queries for q in queries)
        ):
            return progress
        if not pid_alive(launch.pid):
            raise StreamLaunchError(
                f"stream driver {launch.pid} exited during startup; "
                f"end of {launch.log}:\n{log_tail(launch.log)}"
            )
        if time.monotonic() > deadline:
            raise StreamLaunchError(
                f"stream driver {launch.pid} did not start queries {queries} within {timeout:.0f} s; "
                f"end of {launch.log}:\n{log_tail(launch.log)}"
            )
        time.sleep(0.5)


def stop(state_dir: str | Path, *, grace: float = 60.0) -> dict[str, Any]:
    """Stop the driver: SIGTERM (queries stop cleanly), SIGKILL after ``grace`` seconds.

    Idempotent: stopping a stream that does not run returns ``{"stopped": False}``.
    """
    launch = running(state_dir)
    if launch is None:
        return {"stopped": False, "pid": None}
    # SIGTERM to the driver alone lets it stop its queries; the JVM follows its Python parent.
    with contextlib.suppress(ProcessLookupError):
        os.kill(launch.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(launch.pid) and time.monotonic() < deadline:
        _reap(launch.pid)
        time.sleep(0.2)
    killed = False
    if pid_alive(launch.pid):
        _signal_group(launch.pid, signal.SIGKILL)
        killed = True
        while pid_alive(launch.pid):
            _reap(launch.pid)
            time.sleep(0.1)
    return {"stopped": True, "pid": launch.pid, "killed": killed}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The driver leads its own session; its process group also holds Spark's JVM.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    # A driver started by this process is its child: collect it so it does not linger as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(path: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
