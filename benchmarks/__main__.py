"""Run every benchmark in turn (``make bench``); each prints its own result lines.

Each benchmark runs in its own interpreter so one's imports, threads and caches cannot
colour another's numbers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))


def main(names: list[str]) -> int:
    failed = []
    for name in names or BENCHMARKS:
        print(f"# benchmarks.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"# failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
