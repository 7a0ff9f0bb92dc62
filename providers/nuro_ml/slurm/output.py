"""A job's output file: where slurmd writes it and reading its last lines."""

from __future__ import annotations

import os
import re
from pathlib import Path


def expand_output_path(
    pattern: str | None, *, job_id: str, name: str, user: str | None, work_dir: str | None
) -> str:
    """Resolve an ``--output`` pattern as slurmd does for ``%j``, ``%x``, ``%u`` and ``%%``."""
    text = pattern or "slurm-%j.out"
    replacements = {"%j": job_id, "%x": name, "%u": user or "", "%%": "%"}
    text = re.sub(r"%[jxu%]", lambda m: replacements[m.group(0)], text)
    if not text.startswith("/") and work_dir:
        text = f"{work_dir.rstrip('/')}/{text}"
    return text


def tail_lines(path: str | Path, lines: int) -> list[str] | None:
    """Last ``lines`` lines of a text file, or None when it cannot be read from here."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            # Read backwards in blocks so a huge job log costs only its tail.
            block, data = 8192, b""
            while size > 0 and data.count(b"\n") <= lines:
                step = min(block, size)
                size -= step
                fh.seek(size)
                data = fh.read(step) + data
    except OSError:
        return None
    return data.decode(errors="replace").splitlines()[-lines:] if lines > 0 else []
