"""Start or stop one local Ray head for the ``environments/local`` Terraform configuration.

Terraform's ``local-exec`` runs ``python ray_head.py start`` on create and ``python ray_head.py stop`` on
destroy; every setting comes from ``RAY_HEAD_*`` environment variables so that no shell quoting is
involved. The head runs in its own session (``setsid``) with its output in a log file: ``local-exec``
waits until every holder of its stdout pipe exits, so a daemon must never inherit that pipe.

``start`` returns only once the GCS port accepts connections, the dashboard answers on its HTTP API
(the Jobs API a training task uses) and the node has registered (its GPUs are schedulable); a guardian
process stops the head if ``start`` dies before that. ``stop`` ends exactly the processes of the
recorded session, never any other Ray on the machine (``ray stop`` would kill them all).

Only the standard library is used: the script runs with the interpreter whose Ray it starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path

PID_FILE = "ray-head.json"
LOG_FILE = "ray-head.log"
#: Linux limit for a unix socket path (sun_path is 108 bytes including the terminating NUL).
MAX_SOCKET_PATH = 107
#: Longest suffix Ray appends to its temp dir for a socket:
#: ``/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store``.
RAY_SOCKET_SUFFIX = 68


@dataclass(frozen=True)
class HeadRecord:
    """What ``start`` records so that ``stop`` can end exactly this head."""

    pid: int
    start_ticks: int
    gcs_port: int
    dashboard_port: int
    temp_dir: str
    owns_temp_dir: bool
    #: Set once the head answers; until then the guardian ends the head if the starter dies.
    ready: bool = False


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(f"RAY_HEAD_{name}", "")
    if value:
        return value
    if default is None:
        raise SystemExit(f"ray_head: environment variable RAY_HEAD_{name} is required")
    return default


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    fields = _proc_stat(pid)
    # Field 22 (starttime) is index 19 once pid and comm are dropped; it tells a reused PID apart.
    return int(fields[19]) if fields else None


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        # state is index 0, session id index 3; zombies are already dead and only wait to be reaped.
        if fields and int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int, taken: tuple[int, ...]) -> list[int]:
    """``count`` distinct free ports, none of them in ``taken``: the sockets stay bound until all are
    chosen, or the kernel may hand out the same port twice (Ray refuses to start on a clash)."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in taken:
                ports.append(port)
    finally:
        for sock in socks:
            sock.close()
    return ports


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _alive_nodes(dashboard: str) -> list[dict[str, object]]:
    """Nodes the cluster reports ALIVE (state API); empty until the raylet has registered."""
    try:
        with urllib.request.urlopen(f"{dashboard}/api/v0/nodes?limit=100&detail=1", timeout=5.0) as response:
            payload = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return []
    nodes = ((payload.get("data") or {}).get("result") or {}).get("result") or []
    return [node for node in nodes if isinstance(node, dict) and node.get("state") == "ALIVE"]


def _read_record(runtime_dir: Path) -> HeadRecord | None:
    path = runtime_dir / PID_FILE
    try:
        return HeadRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def _write_record(runtime_dir: Path, record: HeadRecord) -> None:
    staging = runtime_dir / f".{PID_FILE}.tmp"
    staging.write_text(json.dumps(asdict(record)))
    os.replace(staging, runtime_dir / PID_FILE)


def _pid_running(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def _alive(record: HeadRecord) -> bool:
    return _start_ticks(record.pid) == record.start_ticks


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def _terminate_session(record: HeadRecord, grace_seconds: float) -> None:
    """SIGTERM the head's process group, then SIGKILL whatever of its session is left."""
    if _alive(record):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while _session_members(record.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _session_members(record.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _session_members(record.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _session_members(record.pid)
    if left:
        raise SystemExit(f"ray_head: processes {left} of session {record.pid} survived SIGKILL")


def _remove_record(runtime_dir: Path, record: HeadRecord) -> None:
    (runtime_dir / PID_FILE).unlink(missing_ok=True)
    if record.owns_temp_dir:
        shutil.rmtree(record.temp_dir, ignore_errors=True)


@dataclass(frozen=True)
class HeadSettings:
    runtime_dir: Path
    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    num_gpus: int
    num_cpus: int
    object_store_mb: int
    timeout: float

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def log_path(self) -> Path:
        return self.runtime_dir / LOG_FILE


def _launch(settings: HeadSettings) -> HeadRecord:
    client_port, agent_port, agent_grpc_port, runtime_env_port, metrics_port = _free_ports(
        5, (settings.gcs_port, settings.dashboard_port)
    )
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        "--port", str(settings.gcs_port),
        "--num-cpus", str(settings.num_cpus),
        "--num-gpus", str(settings.num_gpus),
        "--object-store-memory", str(settings.object_store_mb * 1024 * 1024),
        "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(settings.dashboard_port),
        # Ray's fixed default ports (10001, 52365, ...) clash with any other Ray on this machine.
        "--ray-client-server-port", str(client_port),
        "--dashboard-agent-listen-port", str(agent_port),
        "--dashboard-agent-grpc-port", str(agent_grpc_port),
        "--runtime-env-agent-port", str(runtime_env_port),
        "--metrics-export-port", str(metrics_port),
        "--temp-dir", str(settings.temp_dir),
        "--disable-usage-stats",
    ]  # fmt: skip
    env = dict(
        os.environ,
        # Job entrypoints say `python ...`: put this interpreter's environment first on PATH so
        # jobs run with the same packages as the head, as in an activated virtualenv.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        RAY_USAGE_STATS_ENABLED="0",
        # Ray gives up on a raylet that has not registered within this time; on a busy machine that can
        # exceed Ray's default, and our own timeout already bounds the wait.
        RAY_raylet_start_wait_time_s=str(int(max(settings.timeout, 60))),
        RAY_agent_register_timeout_ms=str(int(max(settings.timeout, 60) * 1000)),
    )
    # Ray turns token authentication on for a new local head whenever ~/.ray/auth_token exists
    # (any local ray.init() writes one); the Jobs clients and readiness checks here send no token,
    # so the mode is set explicitly: disabled for this loopback head unless the caller sets it.
    env.setdefault("RAY_AUTH_MODE", "disabled")
    owns_temp_dir = not settings.temp_dir.exists()
    settings.temp_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        process = subprocess.Popen(
            command, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    return HeadRecord(
        pid=process.pid,
        start_ticks=_start_ticks(process.pid) or 0,
        gcs_port=settings.gcs_port,
        dashboard_port=settings.dashboard_port,
        temp_dir=str(settings.temp_dir),
        owns_temp_dir=owns_temp_dir,
    )


def _session_commands(sid: int) -> set[str]:
    """Command names (``comm``) of the live processes in a session."""
    names = set()
    for pid in _session_members(sid):
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        names.add(raw[raw.index("(") + 1 : raw.rindex(")")])
    return names


def _wait_ready(settings: HeadSettings, record: HeadRecord, deadline: float) -> tuple[bool, str, bool]:
    """Wait for the head: ``(ready, reason it is not, whether a fresh attempt may succeed)``."""
    saw_raylet = False
    while time.monotonic() < deadline:
        # The launched process is our child: once it exits it stays a zombie until reaped.
        if not _alive(record) or not _pid_running(record.pid):
            return False, "exited during start-up", True
        running = _session_commands(record.pid)
        if "raylet" in running:
            saw_raylet = True
        elif saw_raylet:
            # The raylet aborts when its agents start too slowly (a loaded machine); `ray start --block`
            # does not notice, so the head would never become usable.
            return False, "lost its raylet during start-up", True
        if (
            _port_open(settings.gcs_port)
            and _http_ok(f"{settings.dashboard}/api/version")
            and _http_ok(f"{settings.dashboard}/api/jobs/")
            and _alive_nodes(settings.dashboard)
        ):
            return True, "", False
        time.sleep(0.5)
    return False, f"did not answer within {settings.timeout:.0f} s", False


def _wait_ports_free(ports: tuple[int, ...], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(_port_free(p) for p in ports):
        time.sleep(0.2)


def start() -> int:
    runtime_dir = Path(_env("RUNTIME_DIR")).resolve()
    requested_temp = _env("TEMP_DIR", "")
    settings = HeadSettings(
        runtime_dir=runtime_dir,
        temp_dir=Path(requested_temp).resolve() if requested_temp else runtime_dir / "ray",
        gcs_port=int(_env("PORT")),
        dashboard_port=int(_env("DASHBOARD_PORT")),
        num_gpus=int(_env("NUM_GPUS")),
        num_cpus=int(_env("NUM_CPUS")),
        object_store_mb=int(_env("OBJECT_STORE_MEMORY_MB")),
        timeout=float(_env("START_TIMEOUT", "120")),
    )
    attempts = int(_env("START_ATTEMPTS", "3"))
    runtime_dir.mkdir(parents=True, exist_ok=True)

    existing = _read_record(runtime_dir)
    if existing is not None:
        if _alive(existing) and _http_ok(f"{settings.dashboard}/api/version"):
            _write_record(runtime_dir, replace(existing, ready=True))
            print(f"ray_head: head pid {existing.pid} from {runtime_dir} is already running; reusing it")
            return 0
        # A stale record from a crashed run: clean what is left of that session before starting anew.
        _terminate_session(existing, grace_seconds=5)
        _remove_record(runtime_dir, existing)

    if len(str(settings.temp_dir)) + RAY_SOCKET_SUFFIX > MAX_SOCKET_PATH:
        print(
            f"ray_head: Ray temp dir {settings.temp_dir} is too long for unix socket paths "
            f"(at most {MAX_SOCKET_PATH - RAY_SOCKET_SUFFIX} characters); set the ray_temp_dir variable",
            file=sys.stderr,
        )
        return 2
    ports = (settings.gcs_port, settings.dashboard_port)
    busy = [str(port) for port in ports if not _port_free(port)]
    if busy:
        print(f"ray_head: port(s) {', '.join(busy)} on 127.0.0.1 already in use", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _raise_interrupt)
    deadline = time.monotonic() + settings.timeout
    record: HeadRecord | None = None
    reason = "was not started"
    try:
        for attempt in range(1, attempts + 1):
            record = _launch(settings)
            _write_record(runtime_dir, record)
            if attempt == 1:
                _start_guardian(runtime_dir, settings.log_path, settings.timeout)
            print(
                f"ray_head: started pid {record.pid} (attempt {attempt}/{attempts}, "
                f"log {settings.log_path}); waiting for {settings.dashboard}"
            )
            ready, reason, retryable = _wait_ready(settings, record, deadline)
            if ready:
                _write_record(runtime_dir, replace(record, ready=True))
                print(
                    f"ray_head: ready: address 127.0.0.1:{settings.gcs_port}, "
                    f"dashboard {settings.dashboard}, {settings.num_gpus} GPU(s), {settings.num_cpus} CPU(s)"
                )
                return 0
            if not retryable or attempt == attempts or time.monotonic() >= deadline:
                break
            print(f"ray_head: Ray head {reason}; starting it again")
            _terminate_session(record, grace_seconds=2)
            _wait_ports_free(ports, 10)
    except KeyboardInterrupt:
        reason = "start was interrupted"

    print(f"ray_head: Ray head {reason}; last log lines:\n{_tail(settings.log_path)}", file=sys.stderr)
    if record is not None:
        # A failed create leaves the resource tainted and Terraform skips destroy-time provisioners for
        # tainted resources, so the half-started head has to be cleaned up here.
        _terminate_session(record, grace_seconds=5)
        _remove_record(runtime_dir, record)
    return 1


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _start_guardian(runtime_dir: Path, log_path: Path, timeout: float) -> None:
    """Watch this starter: if it dies before the head is ready, stop the half-started head.

    Terraform SIGKILLs a provisioner's command when it is interrupted, and marks the resource tainted,
    so its destroy-time provisioner will never run: nothing else would stop that head.
    """
    env = dict(
        os.environ,
        RAY_HEAD_RUNTIME_DIR=str(runtime_dir),
        RAY_HEAD_STARTER_PID=str(os.getpid()),
        RAY_HEAD_GUARD_SECONDS=str(timeout + 60),
    )
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "guard"],
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )


def guard() -> int:
    runtime_dir = Path(_env("RUNTIME_DIR")).resolve()
    starter = int(_env("STARTER_PID"))
    deadline = time.monotonic() + float(_env("GUARD_SECONDS", "300"))
    while True:
        record = _read_record(runtime_dir)
        if record is None or record.ready:
            return 0
        if not _pid_running(starter) or time.monotonic() > deadline:
            print(f"ray_head guard: starter {starter} ended before the head was ready; stopping it")
            _terminate_session(record, grace_seconds=5)
            _remove_record(runtime_dir, record)
            return 0
        time.sleep(0.2)


def stop() -> int:
    runtime_dir = Path(_env("RUNTIME_DIR")).resolve()
    grace = float(_env("STOP_GRACE", "5"))
    record = _read_record(runtime_dir)
    if record is None:
        print(f"ray_head: no Ray head recorded in {runtime_dir}; nothing to stop")
        return 0
    if not _alive(record) and not _session_members(record.pid):
        print(f"ray_head: Ray head pid {record.pid} already exited")
    else:
        print(f"ray_head: stopping Ray head session {record.pid}")
        _terminate_session(record, grace_seconds=grace)
        print(f"ray_head: Ray head session {record.pid} stopped")
    _remove_record(runtime_dir, record)
    return 0


def main(argv: list[str]) -> int:
    commands = {"start": start, "stop": stop, "guard": guard}
    if len(argv) != 2 or argv[1] not in commands:
        print("usage: ray_head.py start|stop (settings in RAY_HEAD_* environment variables)", file=sys.stderr)
        return 2
    return commands[argv[1]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
