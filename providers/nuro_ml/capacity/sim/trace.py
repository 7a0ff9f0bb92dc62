"""Job traces for the simulator: Alibaba GPU cluster trace 2023, a simple jobs CSV, synthetic.

Alibaba ``openb_pod_list_*.csv`` rows are read by :mod:`nuro_ml.capacity.sim.pod_list` (the
parser the FGD protocol shares). A pod that was scheduled ran from ``scheduled_time`` to
``deletion_time``; it is replayed as a job submitted at ``creation_time`` with that duration.
CPU-only pods and pods that never ran are skipped. With ``milli=True`` a job's ``gpus`` are
milli-GPUs (``num_gpu * gpu_milli``), so GPU-sharing pods (``gpu_milli`` < 1000) take their
share; otherwise they count as one whole GPU. The trace has no teams: the QoS class stands
in for the team, and sets priority.

Jobs CSV columns: ``submit`` (seconds, or an ISO-8601 time), ``duration`` (seconds),
``gpus``, ``team``, ``priority``; optional ``pool``, ``nodes``, ``estimate`` (the run time
the job declares, default its duration) and ``id``.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from nuro_ml.capacity.sim.pod_list import number_in, read_pod_list
from nuro_ml.exceptions import CapacityError

#: Alibaba QoS classes -> priority (latency-sensitive first, best effort last).
QOS_PRIORITY = {"LS": 2, "Guaranteed": 2, "Burstable": 1, "BE": 0}


@dataclass(frozen=True)
class Job:
    """One job of a trace; times in seconds from the start of the trace."""

    id: str
    submit: float
    duration: float
    gpus: int
    team: str
    priority: int = 0
    pool: str = "gpu"
    nodes: int = 1
    #: What the job declares as its run time (its lease TTL); backfill plans with this.
    estimate: float | None = None

    @property
    def declared_runtime(self) -> float:
        return self.duration if self.estimate is None else self.estimate


@dataclass(frozen=True)
class Trace:
    jobs: tuple[Job, ...]
    source: str
    skipped: int = 0

    @property
    def teams(self) -> list[str]:
        return sorted({j.team for j in self.jobs})

    @property
    def pools(self) -> list[str]:
        return sorted({j.pool for j in self.jobs})


def load_alibaba(
    path: str | Path, *, pool: str = "gpu", limit: int | None = None, milli: bool = False
) -> Trace:
    """Read an Alibaba GPU cluster trace 2023 pod list (``openb_pod_list_*.csv``).

    Keeps the GPU pods that ran (``limit``: the first that many), each as a job submitted at
    its creation time that runs from its scheduling to its deletion; CPU-only pods, pods
    never scheduled and pods of zero length count as skipped.

    ``milli``: GPU amounts in milli-GPUs (sharing pods take their share, not a whole GPU).
    """
    path = Path(path)
    jobs: list[Job] = []
    skipped = 0
    for line, pod in read_pod_list(path):
        gpus = pod.demand.gpus_per_worker
        if gpus <= 0 or pod.scheduled is None:
            skipped += 1
            continue
        if pod.deleted is None:
            raise CapacityError(f"{path}:{line}: pod {pod.name!r} was scheduled but has no deletion_time")
        duration = pod.deleted - pod.scheduled
        if duration <= 0:
            skipped += 1
            continue
        jobs.append(
            Job(
                id=pod.name,
                submit=pod.created,
                duration=duration,
                gpus=pod.demand.total_milli if milli else gpus,
                team=pod.qos,
                priority=QOS_PRIORITY.get(pod.qos, 0),
                pool=pool,
            )
        )
        if limit is not None and len(jobs) >= limit:
            break
    return Trace(_rebase(jobs), f"alibaba:{path.name}", skipped)


def _submit_seconds(value: str, path: Path, line: int) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise CapacityError(
            f"{path}:{line}: column 'submit' must be seconds or an ISO-8601 time, got {value!r}"
        ) from None


def load_jobs_csv(path: str | Path, *, default_pool: str = "gpu", milli: bool = False) -> Trace:
    """Read a jobs CSV (submit, duration, gpus, team, priority[, pool, nodes, estimate, id]).

    ``milli``: the jobs' whole GPUs are counted in milli-GPUs (x1000).
    """
    path = Path(path)
    jobs: list[Job] = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        required = ("submit", "duration", "gpus", "team", "priority")
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise CapacityError(f"{path}:1: jobs CSV lacks columns {missing} (needs {list(required)})")
        for line, row in enumerate(reader, start=2):
            duration = number_in(row["duration"], path, line, "duration")
            gpus = number_in(row["gpus"], path, line, "gpus")
            if duration <= 0 or gpus <= 0 or not gpus.is_integer():
                raise CapacityError(
                    f"{path}:{line}: duration must be > 0 and gpus a positive integer, got "
                    f"{row['duration']!r}, {row['gpus']!r}"
                )
            estimate = row.get("estimate") or ""
            jobs.append(
                Job(
                    id=row.get("id") or f"job-{line - 1}",
                    submit=_submit_seconds(row["submit"].strip(), path, line),
                    duration=duration,
                    gpus=int(gpus) * (1000 if milli else 1),
                    team=row["team"].strip() or "default",
                    priority=int(number_in(row["priority"] or "0", path, line, "priority")),
                    pool=(row.get("pool") or "").strip() or default_pool,
                    nodes=int(number_in(row.get("nodes") or "1", path, line, "nodes")),
                    estimate=number_in(estimate, path, line, "estimate") if estimate.strip() else None,
                )
            )
    return Trace(_rebase(jobs), f"jobs:{path.name}")


def write_jobs_csv(jobs: Iterable[Job], path: str | Path) -> Path:
    """Write jobs in the jobs-CSV format (what ``load_jobs_csv`` reads back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "submit", "duration", "gpus", "team", "priority", "pool", "nodes", "estimate"])
        for job in jobs:
            writer.writerow(
                [
                    job.id,
                    f"{job.submit:.3f}",
                    f"{job.duration:.3f}",
                    job.gpus,
                    job.team,
                    job.priority,
                    job.pool,
                    job.nodes,
                    "" if job.estimate is None else f"{job.estimate:.3f}",
                ]
            )
    return path


def scale_time(trace: Trace, factor: float) -> Trace:
    """The trace with submissions ``factor`` times closer together (run times unchanged).

    A factor above 1 loads the cluster more: ``factor`` 10 replays a 10-day trace's arrivals
    in a day.
    """
    if not factor > 0:
        raise CapacityError(f"time scale must be > 0, got {factor}")
    scaled = tuple(
        Job(
            j.id,
            round(j.submit / factor, 3),
            j.duration,
            j.gpus,
            j.team,
            j.priority,
            j.pool,
            j.nodes,
            j.estimate,
        )
        for j in trace.jobs
    )
    return Trace(scaled, f"{trace.source} (time scale {factor:g}x)", trace.skipped)


def _rebase(jobs: Sequence[Job]) -> tuple[Job, ...]:
    if not jobs:
        return ()
    origin = min(j.submit for j in jobs)
    ordered = sorted(jobs, key=lambda j: (j.submit, j.id))
    return tuple(
        Job(
            j.id,
            round(j.submit - origin, 3),
            j.duration,
            j.gpus,
            j.team,
            j.priority,
            j.pool,
            j.nodes,
            j.estimate,
        )
        for j in ordered
    )


@dataclass(frozen=True)
class TeamProfile:
    """How one team submits work in a synthetic trace."""

    name: str
    #: Mean seconds between two submissions (exponential inter-arrival).
    mean_interarrival: float
    gpu_choices: tuple[int, ...]
    #: Median run time in seconds (log-normal, sigma 0.6).
    median_duration: float
    #: Share of this team's jobs that are multi-node gangs (GPUs spread over 2 nodes).
    gang_share: float = 0.0
    #: Share of this team's jobs submitted as urgent (priority 1; the rest are priority 0).
    urgent_share: float = 0.0


#: A research org sharing one 32-GPU pool at about two-thirds load: one team trains big
#: multi-node models, one iterates on many small experiments, one runs medium jobs; a few
#: evaluations are urgent.
DEFAULT_TEAMS: tuple[TeamProfile, ...] = (
    TeamProfile(
        "perception", mean_interarrival=6000.0, gpu_choices=(8, 16), median_duration=3600.0, gang_share=0.5
    ),
    TeamProfile("planning", mean_interarrival=300.0, gpu_choices=(1, 1, 2), median_duration=900.0),
    TeamProfile(
        "mapping", mean_interarrival=1000.0, gpu_choices=(2, 4, 4), median_duration=1800.0, urgent_share=0.1
    ),
)


def synthetic_trace(
    *,
    seed: int = 7,
    hours: float = 24.0,
    teams: Sequence[TeamProfile] = DEFAULT_TEAMS,
    pool: str = "gpu",
    estimate_factor: float = 1.0,
) -> Trace:
    """A reproducible multi-team trace (same seed, same jobs)."""
    rng = random.Random(seed)
    horizon = hours * 3600.0
    jobs: list[Job] = []
    for team in teams:
        t = rng.expovariate(1.0 / team.mean_interarrival)
        index = 0
        while t < horizon:
            gpus = rng.choice(team.gpu_choices)
            duration = max(60.0, rng.lognormvariate(math.log(team.median_duration), 0.6))
            nodes = 2 if gpus >= 2 and gpus % 2 == 0 and rng.random() < team.gang_share else 1
            priority = 1 if rng.random() < team.urgent_share else 0
            jobs.append(
                Job(
                    id=f"{team.name}-{index:05d}",
                    submit=round(t, 3),
                    duration=round(duration, 3),
                    gpus=gpus,
                    team=team.name,
                    priority=priority,
                    pool=pool,
                    nodes=nodes,
                    estimate=round(duration * estimate_factor, 3),
                )
            )
            index += 1
            t += rng.expovariate(1.0 / team.mean_interarrival)
    return Trace(_rebase(jobs), f"synthetic(seed={seed}, hours={hours:g})")
