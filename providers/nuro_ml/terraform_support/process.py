"""Run the Terraform binary: stream its stdout line by line, collect stderr, interrupt on request.

Terraform runs in its own session so that only an explicit :meth:`TerraformProcessRunner.interrupt`
reaches it: on SIGINT Terraform cancels running operations (a provisioner's command is killed and its
resource marked tainted), writes state and releases its state lock, which a SIGKILL would leave held.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nuro_ml.exceptions import TerraformError


@dataclass(frozen=True)
class ProcessResult:
    """Exit status and output of one Terraform command."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    interrupted: bool = False


class TerraformProcessRunner:
    """Runs Terraform commands one at a time in ``cwd`` with ``env``."""

    def __init__(self, *, binary: str, cwd: Path, env: Mapping[str, str]) -> None:
        self.binary = binary
        self.cwd = cwd
        self.env = dict(env)
        self._process: subprocess.Popen[str] | None = None
        self._interrupted = False

    def run(
        self,
        args: Sequence[str],
        *,
        on_stdout_line: Callable[[str], None] | None = None,
        keep_stdout: bool = True,
    ) -> ProcessResult:
        """Run ``terraform <args>``; each stdout line goes to ``on_stdout_line`` as it arrives."""
        command = [self.binary, *args]
        self._interrupted = False
        try:
            process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                start_new_session=True,
            )
        except FileNotFoundError as err:
            raise TerraformError(f"Terraform binary {self.binary!r} not found: {err}") from None
        except PermissionError as err:
            raise TerraformError(f"Terraform binary {self.binary!r} is not executable: {err}") from None
        self._process = process
        stderr_chunks: list[str] = []
        stdout_lines: list[str] = []
        callback_errors: list[BaseException] = []

        def read_stdout() -> None:
            # Drained on a thread so that Terraform never blocks on a full pipe, even while the main
            # thread sits in interrupt() waiting for Terraform to exit.
            assert process.stdout is not None
            for line in process.stdout:
                if keep_stdout:
                    stdout_lines.append(line)
                if on_stdout_line is not None and not callback_errors:
                    try:
                        on_stdout_line(line.rstrip("\n"))
                    except Exception as err:
                        callback_errors.append(err)

        def read_stderr() -> None:
            assert process.stderr is not None
            stderr_chunks.append(process.stderr.read())

        readers = [
            threading.Thread(target=read_stdout, name="terraform-stdout", daemon=True),
            threading.Thread(target=read_stderr, name="terraform-stderr", daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            returncode = process.wait()
        except BaseException:
            # The caller is going away (task killed): do not leave Terraform holding the state lock.
            self.interrupt(grace_period=30)
            raise
        finally:
            for reader in readers:
                reader.join(timeout=30)
            self._process = None
        if callback_errors:
            raise callback_errors[0]
        return ProcessResult(
            args=tuple(args),
            returncode=returncode,
            stdout="".join(stdout_lines),
            stderr="".join(stderr_chunks),
            interrupted=self._interrupted,
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def interrupt(self, *, grace_period: float = 60.0) -> bool:
        """Send SIGINT to the running command and wait up to ``grace_period`` seconds for it to exit.

        Returns whether a process was interrupted. Safe to call from a signal handler or another thread.
        """
        process = self._process
        if process is None or process.poll() is not None:
            return False
        self._interrupted = True
        with contextlib.suppress(ProcessLookupError):
            # The whole process group, as a terminal's Ctrl-C would: Terraform 1.0 runs as a panicwrap
            # parent that ignores SIGINT plus the child that does the work, so signalling the PID alone
            # does nothing.
            os.killpg(process.pid, signal.SIGINT)
        deadline = time.monotonic() + grace_period
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return True
