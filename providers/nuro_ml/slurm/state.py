"""Slurm job states and node states: what they mean for the platform (ended, succeeded, takes jobs)."""

from __future__ import annotations

from enum import StrEnum

from nuro_ml.exceptions import SlurmJobError


class SlurmJobState(StrEnum):
    """Base job states as ``scontrol``/``squeue``/``sacct`` print them."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    RESIZING = "RESIZING"
    REQUEUED = "REQUEUED"
    REQUEUE_FED = "REQUEUE_FED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    REVOKED = "REVOKED"

    @classmethod
    def parse(cls, raw: str) -> SlurmJobState:
        """Read a state as printed, e.g. ``CANCELLED by 0`` (sacct) or ``COMPLETED+``."""
        token = raw.strip().split(" ", 1)[0].rstrip("+")
        try:
            return cls(token)
        except ValueError:
            raise SlurmJobError(f"unknown Slurm job state {raw!r}") from None

    def is_terminal(self) -> bool:
        """True once the job will not run again without someone resubmitting it."""
        return self in _TERMINAL_STATES

    def is_success(self) -> bool:
        return self is SlurmJobState.COMPLETED


_TERMINAL_STATES = frozenset(
    {
        SlurmJobState.COMPLETED,
        SlurmJobState.FAILED,
        SlurmJobState.CANCELLED,
        SlurmJobState.TIMEOUT,
        SlurmJobState.NODE_FAIL,
        SlurmJobState.PREEMPTED,
        SlurmJobState.BOOT_FAIL,
        SlurmJobState.DEADLINE,
        SlurmJobState.OUT_OF_MEMORY,
        SlurmJobState.REVOKED,
    }
)


#: Base node states in which the scheduler starts new jobs.
_SCHEDULABLE_NODE_STATES = frozenset({"idle", "mixed", "allocated", "completing", "planned"})
#: State suffixes meaning the node is not responding, reserved for maintenance or rebooting.
_UNSCHEDULABLE_SUFFIXES = frozenset("*$@^")


def node_state_accepts_jobs(state: str) -> bool:
    """Whether a ``sinfo`` long node state (``idle``, ``mixed-``, ``down*``, ``idle~``) takes jobs.

    Powered-down cloud nodes (``~``) count as available: Slurm powers them up on demand.
    """
    state = state.strip().lower()
    base = state.rstrip("*~#!%$@^-+")
    suffixes = set(state[len(base) :])
    return base in _SCHEDULABLE_NODE_STATES and not (suffixes & _UNSCHEDULABLE_SUFFIXES)
