"""The local environment's Ray head launcher: port choice and noticing a head that died at start-up."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from nuro_ml.settings import REPO_ROOT

from tests.polling import wait_for

SCRIPT = REPO_ROOT / "terraform" / "environments" / "local" / "scripts" / "ray_head.py"


@pytest.fixture(scope="module")
def ray_head() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ray_head_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_component_ports_are_distinct_and_avoid_the_fixed_ones(ray_head: ModuleType) -> None:
    taken = tuple(ray_head._free_ports(2, ()))
    for _ in range(50):
        ports = ray_head._free_ports(5, taken)
        assert len(set(ports)) == 5 and not set(ports) & set(taken)


def test_head_that_exits_during_start_up_is_noticed_at_once(ray_head: ModuleType, tmp_path: Path) -> None:
    # Like `ray start` refusing its port settings: the child exits and stays a zombie until reaped.
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    try:
        wait_for(lambda: not ray_head._pid_running(child.pid), "the child to exit")
        ports = ray_head._free_ports(2, ())
        settings = ray_head.HeadSettings(
            runtime_dir=tmp_path,
            temp_dir=tmp_path / "ray",
            gcs_port=ports[0],
            dashboard_port=ports[1],
            num_gpus=0,
            num_cpus=1,
            object_store_mb=64,
            timeout=120.0,
        )
        record = ray_head.HeadRecord(
            pid=child.pid,
            start_ticks=ray_head._start_ticks(child.pid),
            gcs_port=ports[0],
            dashboard_port=ports[1],
            temp_dir=str(tmp_path / "ray"),
            owns_temp_dir=True,
        )
        ready, reason, retry = ray_head._wait_ready(settings, record, time.monotonic() + 120)
        assert (ready, reason, retry) == (False, "exited during start-up", True)
    finally:
        child.wait()
