"""Rows of an Alibaba GPU cluster trace 2023 pod list (``openb_pod_list_*.csv``) as pods.

One parser for both readers of the file: the timed replay
(:func:`nuro_ml.capacity.sim.trace.load_alibaba`, pods that ran, at their times) and the
FGD protocol (:func:`nuro_ml.capacity.sim.openb.load_pods`, every pod's demand). They keep
different rows, but a row means the same to both and a bad cell is reported the same way.

Columns: name, cpu_milli, memory_mib, num_gpu, gpu_milli, gpu_spec, qos, pod_phase,
creation_time, deletion_time, scheduled_time (seconds). A pod asks for ``num_gpu`` GPUs of
``gpu_milli`` milli-GPUs each (below 1000 only with one GPU: a GPU-sharing pod; empty: whole
GPUs), ``cpu_milli`` and ``memory_mib``, optionally of a ``gpu_spec`` model (``A|B``:
either). A pod that never ran has no ``scheduled_time``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nuro_ml.capacity.placement import MILLI, Demand
from nuro_ml.exceptions import CapacityError

ALIBABA_COLUMNS = (
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)


@dataclass(frozen=True)
class Pod:
    """One pod of an openb pod list: its demand and, when it ran, its times (seconds)."""

    name: str
    demand: Demand
    qos: str = "BE"
    created: float = 0.0
    scheduled: float | None = None
    deleted: float | None = None


def number_in(value: str | None, path: Path, line: int, column: str) -> float:
    """A CSV cell as a number, or an error naming the file, line and column."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CapacityError(f"{path}:{line}: column {column!r} must be a number, got {value!r}") from None


def whole_number_in(value: str | None, path: Path, line: int, column: str) -> int:
    """A CSV cell as a whole number >= 0, or an error naming the file, line and column."""
    number = number_in(value, path, line, column)
    if number < 0 or not number.is_integer():
        raise CapacityError(f"{path}:{line}: column {column!r} must be a whole number >= 0, got {value!r}")
    return int(number)


def _time_in(value: str, path: Path, line: int, column: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    seconds = number_in(value, path, line, column)
    if seconds < 0:
        raise CapacityError(f"{path}:{line}: column {column!r} must be >= 0 seconds, got {value!r}")
    return seconds


def parse_pod_row(row: dict[str, str], path: Path, line: int) -> Pod:
    """One pod-list row (``line`` of ``path``, for errors) as a :class:`Pod`."""
    gpus = whole_number_in(row["num_gpu"], path, line, "num_gpu")
    milli = 0
    if gpus:
        milli = whole_number_in(row["gpu_milli"] or str(MILLI), path, line, "gpu_milli")
        if not 0 < milli <= MILLI:
            raise CapacityError(f"{path}:{line}: gpu_milli must be 1..{MILLI} for a GPU pod, got {milli}")
        if gpus > 1 and milli < MILLI:
            raise CapacityError(
                f"{path}:{line}: a pod with {gpus} GPUs must take whole GPUs (gpu_milli {MILLI})"
            )
    created = _time_in(row["creation_time"] or "", path, line, "creation_time")
    if created is None:
        raise CapacityError(f"{path}:{line}: column 'creation_time' is empty")
    spec = (row["gpu_spec"] or "").strip()
    return Pod(
        name=row["name"],
        demand=Demand(
            gpu_milli=milli,
            gpus_per_worker=gpus,
            workers=1,
            cpu_milli=whole_number_in(row["cpu_milli"], path, line, "cpu_milli"),
            memory_mib=whole_number_in(row["memory_mib"], path, line, "memory_mib"),
            gpu_model=None if spec in ("", "nan") else spec,
        ),
        qos=(row["qos"] or "").strip() or "BE",
        created=created,
        scheduled=_time_in(row["scheduled_time"] or "", path, line, "scheduled_time"),
        deleted=_time_in(row["deletion_time"] or "", path, line, "deletion_time"),
    )


def read_pod_list(path: str | Path) -> Iterator[tuple[int, Pod]]:
    """Each pod of a pod list with its line number, read lazily (a caller may stop early)."""
    path = Path(path)
    if not path.is_file():
        raise CapacityError(f"pod list {path} does not exist")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ALIBABA_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise CapacityError(
                f"{path}:1: not an Alibaba GPU trace 2023 pod list, missing columns {missing}"
            )
        for line, row in enumerate(reader, start=2):
            yield line, parse_pod_row(row, path, line)
