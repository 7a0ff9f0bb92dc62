"""Discrete-event replay of a job trace through :func:`nuro_ml.capacity.policy.decide`.

At every arrival and completion the simulator builds the same :class:`Snapshot` the ledger
builds for the trigger (running leases with their expiry, waiting requests with their
enqueue time, pools, quotas) and starts exactly what the policy admits. Reclaimed leases
are preempted after ``reclaim_grace`` seconds and their jobs queue again from scratch.
Deterministic: no randomness, ties broken by job id.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nuro_ml.capacity.policy import Pending, PolicyConfig, PoolView, Running, Snapshot, decide, get_policy
from nuro_ml.capacity.records import Quota
from nuro_ml.capacity.sim.trace import Job, Trace
from nuro_ml.exceptions import CapacityError

_ARRIVAL, _FINISH, _PREEMPT, _POLL = 1, 0, 2, 3


@dataclass
class JobRun:
    """What happened to one job."""

    job: Job
    start: float | None = None
    end: float | None = None
    preemptions: int = 0
    #: GPU-seconds of work lost to preemption.
    lost_gpu_seconds: float = 0.0
    #: Seconds waited in the queue over all attempts.
    waited: float = 0.0
    _queued_at: float = 0.0
    _attempt: int = 0

    @property
    def finished(self) -> bool:
        return self.end is not None

    @property
    def wait(self) -> float:
        return self.waited

    @property
    def jct(self) -> float:
        """Job completion time: submission to end."""
        return (self.end or 0.0) - self.job.submit


@dataclass
class SimResult:
    policy: str
    trace: str
    capacity: dict[str, int]
    runs: list[JobRun]
    #: (time, GPUs in use per pool) after every event, for utilization plots.
    timeline: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    unschedulable: dict[str, str] = field(default_factory=dict)
    decisions: int = 0


def default_quotas(trace: Trace, capacity: Mapping[str, int]) -> list[Quota]:
    """Equal nominal shares per pool for the trace's teams, borrowing unlimited."""
    quotas = []
    teams = trace.teams
    for pool, gpus in capacity.items():
        share, extra = divmod(gpus, max(1, len(teams)))
        for index, team in enumerate(teams):
            quotas.append(Quota(team=team, pool=pool, nominal=share + (1 if index < extra else 0)))
    return quotas


def simulate(
    trace: Trace,
    capacity: Mapping[str, int],
    *,
    quotas: Sequence[Quota] | None = None,
    policy: PolicyConfig | str = "fair",
    reclaim_grace: float = 0.0,
    poll_interval: float | None = 300.0,
) -> SimResult:
    """Replay ``trace`` on pools of ``capacity`` GPUs under ``policy``.

    Besides at every arrival and completion, the policy runs every ``poll_interval`` seconds
    while requests wait, as the trigger's poller does, so time-based rules (aging, reclaim
    after a wait) take effect between events. ``None`` decides on events only.
    """
    config = get_policy(policy)
    unknown = sorted({j.pool for j in trace.jobs} - set(capacity))
    if unknown:
        raise CapacityError(f"trace {trace.source} uses pools {unknown} that have no capacity given")
    quota_map = {
        (q.team, q.pool): q for q in (quotas if quotas is not None else default_quotas(trace, capacity))
    }
    pools = {name: PoolView(name, gpus) for name, gpus in capacity.items()}

    runs = {job.id: JobRun(job) for job in trace.jobs}
    result = SimResult(config.name, trace.source, dict(capacity), list(runs.values()))
    sequence = itertools.count()
    events: list[tuple[float, int, int, str, int]] = []
    for job in trace.jobs:
        heapq.heappush(events, (job.submit, _ARRIVAL, next(sequence), job.id, 0))

    pending: dict[str, Pending] = {}
    running: dict[str, Running] = {}
    in_use = dict.fromkeys(capacity, 0)
    next_poll: float | None = None

    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, kind, _, job_id, attempt = heapq.heappop(events)
            if kind == _POLL:
                next_poll = None
                continue
            run = runs[job_id]
            if kind == _ARRIVAL:
                run._queued_at = now
                # A preempted job lines up again from now, like a retried task's new request.
                pending[job_id] = _pending(run.job, now)
            elif attempt != run._attempt or job_id not in running:
                continue  # the attempt this event belonged to was preempted
            elif kind == _FINISH:
                lease = running.pop(job_id)
                in_use[lease.pool] -= lease.gpus
                run.end = now
            else:  # _PREEMPT: the lease's reclaim grace is over
                lease = running.pop(job_id)
                in_use[lease.pool] -= lease.gpus
                run.preemptions += 1
                run.lost_gpu_seconds += lease.gpus * (now - (run.start or now))
                run.start = None
                run._attempt += 1
                heapq.heappush(events, (now, _ARRIVAL, next(sequence), job_id, run._attempt))

        decision = decide(
            Snapshot(
                now=now,
                pools=pools,
                quotas=quota_map,
                running=tuple(running.values()),
                pending=tuple(pending.values()),
            ),
            config,
        )
        result.decisions += 1
        for admission in decision.admitted:
            run = runs[admission.key]
            del pending[admission.key]
            run.waited += now - run._queued_at
            run.start = now
            running[admission.key] = Running(
                lease_id=admission.key,
                key=admission.key,
                team=admission.team,
                pool=admission.pool,
                gpus=admission.gpus,
                acquired_at=now,
                expires_at=now + run.job.declared_runtime,
                priority=run.job.priority,
            )
            in_use[admission.pool] += admission.gpus
            heapq.heappush(
                events, (now + run.job.duration, _FINISH, next(sequence), admission.key, run._attempt)
            )
        for lease_id in decision.reclaim:
            lease = running[lease_id]
            running[lease_id] = Running(
                lease.lease_id,
                lease.key,
                lease.team,
                lease.pool,
                lease.gpus,
                lease.acquired_at,
                min(lease.expires_at, now + reclaim_grace),
                lease.priority,
                reclaim_requested=True,
            )
            heapq.heappush(
                events, (now + reclaim_grace, _PREEMPT, next(sequence), lease_id, runs[lease_id]._attempt)
            )
        for key, reason in decision.impossible.items():
            if key in pending:
                del pending[key]
                result.unschedulable[key] = reason
        result.timeline.append((now, dict(in_use)))
        if pending and poll_interval is not None and next_poll is None:
            next_poll = now + poll_interval
            heapq.heappush(events, (next_poll, _POLL, next(sequence), "", 0))

    for key in pending:
        result.unschedulable.setdefault(key, "still waiting when the trace ended")
    return result


def _pending(job: Job, enqueued_at: float) -> Pending:
    return Pending(
        key=job.id,
        team=job.team,
        pool=job.pool,
        gpus=job.gpus,
        enqueued_at=enqueued_at,
        nodes=job.nodes,
        priority=job.priority,
        max_runtime=job.declared_runtime,
    )
