"""The records the Slurm hooks take and return: a job, a job to submit, and a node's GRES."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from nuro_ml.slurm.state import SlurmJobState, node_state_accepts_jobs


@dataclass(frozen=True)
class SlurmJobInfo:
    """What Slurm knows about one batch job."""

    job_id: str
    name: str
    state: SlurmJobState
    #: Exit status of the batch script (``N`` of ``ExitCode=N:S``); None before it ends.
    exit_code: int | None = None
    #: Signal that ended the script (``S`` of ``ExitCode=N:S``), 0 when none.
    signal: int | None = None
    reason: str | None = None
    partition: str | None = None
    nodes: str | None = None
    comment: str | None = None
    work_dir: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal()

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form, for trigger events."""
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlurmJobInfo:
        values = dict(data)
        values["state"] = SlurmJobState.parse(values["state"])
        return cls(**values)

    def describe(self) -> str:
        """One line naming the job, its state, exit code and reason."""
        text = f"Slurm job {self.job_id} ({self.name}) is {self.state.value}"
        if self.exit_code is not None:
            text += f" with exit code {self.exit_code}"
            if self.signal:
                text += f" (signal {self.signal})"
        if self.reason:
            text += f", reason {self.reason}"
        return text


@dataclass(frozen=True)
class SlurmJobSpec:
    """A batch job to submit: the script plus the ``sbatch`` options the platform uses."""

    #: Batch script text (``#!`` line and ``#SBATCH`` directives allowed); or use ``script_path``.
    script: str | None = None
    #: Batch script file on the machine running the hook, submitted as it is.
    script_path: str | None = None
    name: str | None = None
    #: Free text stored with the job; the operators keep their idempotency key here.
    comment: str | None = None
    partition: str | None = None
    account: str | None = None
    gpus: int | None = None
    gpu_type: str | None = None
    cpus_per_task: int | None = None
    #: ``--mem`` value, e.g. ``4G``.
    memory: str | None = None
    #: ``--time``: minutes, ``[D-]HH:MM:SS`` text, or a timedelta.
    time_limit: int | str | timedelta | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    working_directory: str | None = None
    #: ``--output`` file pattern (``%j`` is the job id); stderr goes there too unless ``error_path``.
    output_path: str | None = None
    error_path: str | None = None
    extra_args: Sequence[str] = ()
    #: Nodes the job must run on (``--nodelist``), e.g. those its GPU lease holds; with
    #: ``gpus`` then counted per node and ``--nodes`` set to their number.
    nodelist: Sequence[str] = ()


@dataclass(frozen=True)
class SlurmNodeGres:
    """One node as seen from one partition, with its configured and allocated GRES."""

    node: str
    partition: str
    state: str
    #: ``{(name, type or None): count}``, from ``Gres``.
    gres: Mapping[tuple[str, str | None], int]
    #: Same keys, from ``GresUsed``.
    gres_used: Mapping[tuple[str, str | None], int]
    cpus_idle: int | None = None
    is_default_partition: bool = False

    def count(self, name: str = "gpu", gres_type: str | None = None, *, used: bool = False) -> int:
        """GRES of ``name`` (optionally only ``gres_type``) configured, or allocated if ``used``."""
        source = self.gres_used if used else self.gres
        return sum(n for (g, t), n in source.items() if g == name and (gres_type is None or t == gres_type))

    @property
    def accepts_jobs(self) -> bool:
        """Whether the scheduler can start new work here (not down, drained, failing...)."""
        return node_state_accepts_jobs(self.state)
