"""A local Ray cluster as processes: a head node plus worker nodes, each ``ray start --block``.

Each node runs in its own session (process group) with free ports for every port Ray would
otherwise take from a fixed default; the cluster's nodes share one short ``--temp-dir`` of their
own, so the cluster never meets another Ray on this machine. Stopping signals each node's
process group and then any process the node started outside it (Ray puts some detached
actors in their own session); nothing is ever stopped by name, and ``ray stop`` is never used.
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
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from nuro_ml.local_cluster.processes import free_port

HEAD_CPUS = 3
HEAD_GPUS = 2
WORKER_CPUS = 2
WORKER_GPUS = 2
OBJECT_STORE_BYTES = 150 * 1024 * 1024


@dataclass
class RayNode:
    pid: int
    temp_dir: Path
    log_path: Path
    #: HTTP port of the node's dashboard agent (it runs the jobs' supervisors).
    agent_port: int
    #: Every process the node had started when last looked at (the ``ray start`` process's tree).
    known_pids: set[int] = field(default_factory=set)
    raylet_seen: bool = False

    def remember_children(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.known_pids.update(p.pid for p in psutil.Process(self.pid).children(recursive=True))

    def to_dict(self) -> dict[str, object]:
        record = asdict(self)
        record.update(temp_dir=str(self.temp_dir), log_path=str(self.log_path))
        record["known_pids"] = sorted(self.known_pids)
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, object]) -> RayNode:
        return cls(
            pid=int(record["pid"]),  # type: ignore[call-overload]
            temp_dir=Path(str(record["temp_dir"])),
            log_path=Path(str(record["log_path"])),
            agent_port=int(record["agent_port"]),  # type: ignore[call-overload]
            known_pids={int(p) for p in record.get("known_pids") or []},  # type: ignore[attr-defined]
            raylet_seen=bool(record.get("raylet_seen")),
        )


@dataclass
class RayCluster:
    #: GCS address for ``ray.init``/``ray start --address``.
    gcs_address: str
    #: Dashboard and Jobs API base URL.
    dashboard_url: str
    head: RayNode
    workers: list[RayNode]
    gpus: int
    cpus: int

    @property
    def nodes(self) -> list[RayNode]:
        return [*self.workers, self.head]

    def to_dict(self) -> dict[str, object]:
        return {
            "gcs_address": self.gcs_address,
            "dashboard_url": self.dashboard_url,
            "head": self.head.to_dict(),
            "workers": [w.to_dict() for w in self.workers],
            "gpus": self.gpus,
            "cpus": self.cpus,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, object]) -> RayCluster:
        return cls(
            gcs_address=str(record["gcs_address"]),
            dashboard_url=str(record["dashboard_url"]),
            head=RayNode.from_dict(record["head"]),  # type: ignore[arg-type]
            workers=[RayNode.from_dict(w) for w in record["workers"]],  # type: ignore[attr-defined]
            gpus=int(record["gpus"]),  # type: ignore[call-overload]
            cpus=int(record["cpus"]),  # type: ignore[call-overload]
        )


def _node_ports() -> tuple[list[str], int]:
    """Command-line ports for one node, and the dashboard agent's HTTP port among them."""
    agent_port = free_port()
    args = [
        "--dashboard-agent-listen-port",
        str(agent_port),
        "--dashboard-agent-grpc-port",
        str(free_port()),
        "--metrics-export-port",
        str(free_port()),
        "--runtime-env-agent-port",
        str(free_port()),
        "--node-manager-port",
        str(free_port()),
        "--object-manager-port",
        str(free_port()),
    ]
    return args, agent_port


#: Seconds a node may take to register with the GCS (Ray's own ``ray start`` allows 30).
REGISTRATION_TIMEOUT = 120

#: ``ray start`` made patient enough for a 2-core machine shared with other test suites.
#: Ray 2.60 gives a node's Python agents 15 s to report their ports and the raylet 30 s to
#: register, or gives up; importing every dashboard module alone can take longer than that when
#: the CPUs are busy. Two adjustments, the rest is the stock CLI:
#: - every port is fixed by the fixture, so the dashboard agent's listen port is written to its
#:   port file before the raylet starts instead of after the agent finished loading (the agent
#:   later writes the same value);
#: - registration is awaited for up to REGISTRATION_TIMEOUT, then the error goes through;
#: - the cluster's nodes share one temp dir (see start_ray_cluster), but each keeps its own
#:   runtime-env files: a node's runtime-env agent deletes the packages its own node no longer
#:   uses, which must not pull a working_dir from under a job on another node.
_LAUNCHER = f"""
import os, sys, time
import ray._private.node as node_module
import ray._private.ray_constants as ray_constants
import ray._private.services as services
from ray._raylet import DASHBOARD_AGENT_LISTEN_PORT_NAME, persist_port

_start_raylet = node_module.Node.start_raylet

def _start_raylet_with_known_agent_port(self, *args, **kwargs):
    port = self._ray_params.dashboard_agent_listen_port
    if port:
        persist_port(self._session_dir, self._node_id, DASHBOARD_AGENT_LISTEN_PORT_NAME, port)
    return _start_raylet(self, *args, **kwargs)

node_module.Node.start_raylet = _start_raylet_with_known_agent_port
ray_constants.DEFAULT_RUNTIME_ENV_DIR_NAME = f"runtime_resources_{{os.getpid()}}"

_get_node = services.get_node

def _patient_get_node(gcs_address, node_id):
    deadline = time.monotonic() + {REGISTRATION_TIMEOUT}
    while True:
        try:
            return _get_node(gcs_address, node_id)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)

services.get_node = _patient_get_node
from ray.scripts.scripts import main
sys.argv[0] = "ray"
main()
"""


def _spawn(args: list[str], temp_dir: Path, extra_env: Mapping[str, str] | None = None) -> RayNode:
    port_args, agent_port = _node_ports()
    args = [*args, *port_args]
    # Nodes share the temp dir, so each launcher log gets its own name.
    fd, name = tempfile.mkstemp(prefix="node-", suffix=".log", dir=temp_dir)
    os.close(fd)
    log_path = Path(name)
    env = dict(
        os.environ,
        **(extra_env or {}),
        RAY_USAGE_STATS_ENABLED="0",
        # No idle workers prestarted at boot: they compete with the agents a node must start
        # before the raylet gives up on them, and jobs with a runtime_env cannot use them anyway.
        RAY_enable_worker_prestart="0",
        # Time the raylet allows its Python agents to come up (slow on a saturated machine).
        RAY_agent_register_timeout_ms="120000",
    )
    # Ray turns token authentication on for every new local cluster once ~/.ray/auth_token
    # exists (any local ray.init() writes one), and our readiness probes and Jobs clients would
    # then get 401s. The mode is chosen here rather than by the home folder's state: disabled
    # for these loopback clusters unless the caller asks for token auth explicitly.
    env.setdefault("RAY_AUTH_MODE", "disabled")
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _LAUNCHER,
                "start",
                "--block",
                "--disable-usage-stats",
                "--temp-dir",
                str(temp_dir),
                "--object-store-memory",
                str(OBJECT_STORE_BYTES),
                *args,
            ],
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return RayNode(pid=process.pid, temp_dir=temp_dir, log_path=log_path, agent_port=agent_port)


def _exited(node: RayNode) -> bool:
    """The node's ``ray start`` process ended, or its raylet died (Ray then never recovers)."""
    try:
        if psutil.Process(node.pid).status() == psutil.STATUS_ZOMBIE:
            return True
    except psutil.NoSuchProcess:
        return True
    raylet_alive = _raylet_alive(node)
    if raylet_alive:
        node.raylet_seen = True
    return node.raylet_seen and not raylet_alive


def _raylet_alive(node: RayNode) -> bool:
    try:
        children = psutil.Process(node.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for child in children:
        try:
            if child.name() == "raylet" and child.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            continue
    return False


def _wait(predicate: Callable[[], bool], what: str, nodes: list[RayNode], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in nodes:
            if _exited(node):
                raise RuntimeError(
                    f"Ray node {node.pid} exited while waiting for {what}:\n{_tail(node.log_path)}"
                )
        if predicate():
            return
        time.sleep(0.3)
    logs = "\n".join(f"--- {n.log_path}\n{_tail(n.log_path)}" for n in nodes)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}:\n{logs}")


def _tail(path: Path, lines: int = 30) -> str:
    text = []
    for log in (path, *sorted(path.parent.glob("session_latest/logs/raylet.err"))):
        try:
            text.append(f"{log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        except OSError:
            continue
    return "\n".join(text) or "(no log)"


def _alive_nodes(dashboard_url: str) -> int:
    try:
        with urllib.request.urlopen(f"{dashboard_url}/nodes?view=summary", timeout=5) as response:
            payload = json.load(response)
    except (OSError, ValueError):
        return 0
    summary = payload.get("data", {}).get("summary", [])
    return sum(1 for node in summary if (node.get("raylet") or {}).get("state") == "ALIVE")


def _agent_up(node: RayNode) -> bool:
    """The agent's HTTP server answers (it listens on the node's IP, not necessarily loopback)."""
    for host in {"127.0.0.1", _node_ip()}:
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((host, node.agent_port)) == 0:
                return True
    return False


def _node_ip() -> str:
    from ray.util import get_node_ip_address

    return str(get_node_ip_address())


def _jobs_api_up(dashboard_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{dashboard_url}/api/version", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def start_ray_cluster(
    *,
    attempts: int = 3,
    head_cpus: int = HEAD_CPUS,
    head_gpus: int = HEAD_GPUS,
    worker_cpus: int = WORKER_CPUS,
    worker_gpus: int = WORKER_GPUS,
    workers: int = 1,
    timeout: float = 180.0,
    env: Mapping[str, str] | None = None,
) -> RayCluster:
    """Start a head and ``workers`` worker nodes and wait until the Jobs API sees them all alive.

    Ray gives a node 30 s to register with the GCS; on a saturated machine that can run out, so
    a failed start is cleaned up and tried again (``attempts`` in all). ``env`` is added to every
    node's environment (and so to every job's).
    """
    for attempt in range(1, attempts + 1):
        try:
            return _start_once(
                head_cpus=head_cpus,
                head_gpus=head_gpus,
                worker_cpus=worker_cpus,
                worker_gpus=worker_gpus,
                workers=workers,
                timeout=timeout,
                env=env,
            )
        except (RuntimeError, TimeoutError):
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _start_once(
    *,
    head_cpus: int,
    head_gpus: int,
    worker_cpus: int,
    worker_gpus: int,
    workers: int,
    timeout: float,
    env: Mapping[str, str] | None,
) -> RayCluster:
    gcs_port, dashboard_port = free_port(), free_port()
    dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    # Unix socket paths live under --temp-dir and must stay under 108 characters: keep it short.
    # Every node of the cluster shares it, as nodes on one host do in Ray's own test clusters:
    # a dashboard agent reads job logs from the logs folder of whichever local raylet its
    # ray.init() finds, which on one host need not be its own node's. With one folder, a job
    # driver's log is where every agent looks.
    head_dir = Path(tempfile.mkdtemp(prefix="nrt-", dir="/tmp"))
    head = _spawn(
        [
            "--head",
            "--port",
            str(gcs_port),
            "--num-cpus",
            str(head_cpus),
            "--num-gpus",
            str(head_gpus),
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard_port),
            "--ray-client-server-port",
            str(free_port()),
        ],
        head_dir,
        env,
    )
    cluster = RayCluster(
        gcs_address=f"127.0.0.1:{gcs_port}",
        dashboard_url=dashboard_url,
        head=head,
        workers=[],
        gpus=head_gpus + workers * worker_gpus,
        cpus=head_cpus + workers * worker_cpus,
    )
    try:
        # Workers join once the head's raylet has registered (they look it up in the GCS first,
        # and starting everything at once only slows every node down).
        _wait(lambda: _jobs_api_up(dashboard_url), f"Jobs API at {dashboard_url}", [head], timeout)
        _wait(lambda: _alive_nodes(dashboard_url) >= 1, "the head node to register", [head], timeout)
        for _ in range(workers):
            cluster.workers.append(
                _spawn(
                    [
                        "--address",
                        cluster.gcs_address,
                        "--num-cpus",
                        str(worker_cpus),
                        "--num-gpus",
                        str(worker_gpus),
                    ],
                    head_dir,
                    env,
                )
            )
        expected = 1 + workers
        _wait(lambda: _alive_nodes(dashboard_url) == expected, f"{expected} nodes", cluster.nodes, timeout)
        # Nodes register before their dashboard agents finish loading (see _LAUNCHER); jobs need them.
        _wait(lambda: all(_agent_up(n) for n in cluster.nodes), "dashboard agents", cluster.nodes, timeout)
    except BaseException:
        stop_ray_cluster(cluster)
        raise
    for node in cluster.nodes:
        node.remember_children()
    return cluster


def add_worker(
    cluster: RayCluster,
    *,
    cpus: int = WORKER_CPUS,
    gpus: int = WORKER_GPUS,
    env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
) -> RayNode:
    """Start one more worker node (e.g. to replace one that died) and wait until it serves jobs."""
    node = _spawn(
        ["--address", cluster.gcs_address, "--num-cpus", str(cpus), "--num-gpus", str(gpus)],
        cluster.head.temp_dir,
        env,
    )
    cluster.workers.append(node)
    # The nodes this record holds; a node that just died may still be listed ALIVE for a while, so
    # the new node's own agent is what tells that it serves jobs.
    expected = 1 + len(cluster.workers)
    try:
        _wait(lambda: _alive_nodes(cluster.dashboard_url) >= expected, f"{expected} nodes", [node], timeout)
        _wait(lambda: _agent_up(node), "the new node's dashboard agent", [node], timeout)
    except BaseException:
        stop_node(node)
        cluster.workers.remove(node)
        raise
    node.remember_children()
    return node


def alive_nodes(cluster: RayCluster) -> int:
    """Nodes the dashboard reports ALIVE."""
    return _alive_nodes(cluster.dashboard_url)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_node(node: RayNode, grace: float = 10.0) -> None:
    """Stop one node: its process group, then every process it was seen to start."""
    node.remember_children()
    _signal_group(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and psutil.pid_exists(node.pid):
        try:
            if psutil.Process(node.pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    _signal_group(node.pid, signal.SIGKILL)
    leftovers = []
    for pid in node.known_pids:
        try:
            leftovers.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for proc in leftovers:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(leftovers, timeout=10)


def stop_ray_cluster(cluster: RayCluster, *, grace: float = 10.0) -> None:
    """Stop the worker nodes, then the head, by process group and remembered PIDs; remove temp dirs."""
    for node in cluster.nodes:
        stop_node(node, grace)
    for temp_dir in {node.temp_dir for node in cluster.nodes}:
        shutil.rmtree(temp_dir, ignore_errors=True)


def ray_processes(cluster: RayCluster) -> list[int]:
    """PIDs still alive among those the cluster's nodes started (empty after a clean stop)."""
    alive = []
    for node in cluster.nodes:
        for pid in {node.pid, *node.known_pids}:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
    return alive
