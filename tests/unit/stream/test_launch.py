"""Finding and stopping the stream's driver by its launch record, never a recycled pid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nuro_ml.etl.stream_progress import pid_alive
from nuro_ml.operators.stream import StopTelemetryStreamOperator
from nuro_ml.stream import launch as stream_launch
from nuro_ml.stream.launch import Launch


def _launch(state: Path, proc: subprocess.Popen[bytes], cmd: list[str]) -> None:
    Launch(
        pid=proc.pid,
        command=cmd,
        started_at="t",
        checkpoint="c",
        state_dir=str(state),
        log=str(state / "log"),
    ).write()


def test_running_stream_is_found_and_stopped_idempotently(tmp_path: Path) -> None:
    # A stand-in driver: its command line names the stream job module and this state folder.
    cmd = [sys.executable, "-c", "import time; time.sleep(120)", stream_launch.JOB_MODULE, str(tmp_path)]
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        _launch(tmp_path, proc, cmd)
        assert stream_launch.running(tmp_path) is not None
        result = StopTelemetryStreamOperator(task_id="stop", state_dir=str(tmp_path), grace=10).execute({})
        assert result == {"stopped": True, "pid": proc.pid, "killed": False}
        assert not pid_alive(proc.pid)
        assert stream_launch.running(tmp_path) is None
        assert StopTelemetryStreamOperator(task_id="stop", state_dir=str(tmp_path)).execute({}) == {
            "stopped": False,
            "pid": None,
        }
    finally:
        proc.kill()
        proc.wait()


def test_a_recycled_pid_is_not_the_stream_and_is_never_signalled(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _launch(tmp_path, other, ["python", "-m", stream_launch.JOB_MODULE])
        assert stream_launch.running(tmp_path) is None
        assert stream_launch.stop(tmp_path, grace=1) == {"stopped": False, "pid": None}
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
