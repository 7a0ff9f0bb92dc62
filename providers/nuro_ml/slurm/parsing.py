"""Parsing of Slurm command output (pure functions, unit tested on captured output)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from nuro_ml.exceptions import SlurmJobError
from nuro_ml.slurm.models import SlurmJobInfo, SlurmNodeGres
from nuro_ml.slurm.state import SlurmJobState

#: What ``scontrol``/``scancel`` print on stderr for a job id slurmctld does not know.
INVALID_JOB_TEXT = "Invalid job id specified"

_SCONTROL_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_scontrol_record(line: str) -> dict[str, str]:
    """Split one ``scontrol show ... -o`` line into its ``Key=Value`` fields.

    Values may contain ``=`` and ``,`` (``TRES=cpu=1,node=1``); a new field starts only where
    whitespace is followed by ``Key=``.
    """
    matches = list(_SCONTROL_KEY.finditer(line))
    fields: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        fields[match.group(1)] = line[match.end() : end].strip()
    return fields


def parse_exit_code(raw: str | None) -> tuple[int | None, int | None]:
    """``"3:0"`` -> ``(3, 0)``; missing or unparsable -> ``(None, None)``."""
    if not raw:
        return None, None
    status, _, sig = raw.partition(":")
    try:
        return int(status), int(sig or 0)
    except ValueError:
        return None, None


def clean_value(value: str | None) -> str | None:
    """None for the ways Slurm prints "no value" (empty, ``(null)``, ``N/A``, ``None``)."""
    if value is None or value in ("", "(null)", "N/A", "None"):
        return None
    return value


def job_info_from_scontrol(fields: Mapping[str, str]) -> SlurmJobInfo:
    """Build a :class:`SlurmJobInfo` from parsed ``scontrol show job -o`` fields."""
    state = SlurmJobState.parse(fields["JobState"])
    exit_code, sig = parse_exit_code(fields.get("ExitCode"))
    if not state.is_terminal():
        # scontrol prints ExitCode=0:0 for jobs that have not ended yet.
        exit_code, sig = None, None
    return SlurmJobInfo(
        job_id=fields["JobId"],
        name=fields.get("JobName", ""),
        state=state,
        exit_code=exit_code,
        signal=sig,
        reason=clean_value(fields.get("Reason")),
        partition=clean_value(fields.get("Partition")),
        nodes=clean_value(fields.get("NodeList")),
        comment=clean_value(fields.get("Comment")),
        work_dir=clean_value(fields.get("WorkDir")),
        stdout_path=clean_value(fields.get("StdOut")),
        stderr_path=clean_value(fields.get("StdErr")),
    )


def parse_scontrol_jobs(text: str) -> list[SlurmJobInfo]:
    return [job_info_from_scontrol(parse_scontrol_record(line)) for line in text.splitlines() if line.strip()]


SACCT_FIELDS = (
    "JobID",
    "JobName",
    "State",
    "ExitCode",
    "Reason",
    "Partition",
    "NodeList",
    "WorkDir",
    "Comment",
)


def parse_sacct_jobs(text: str) -> list[SlurmJobInfo]:
    """Parse ``sacct -X -n -P -o`` :data:`SACCT_FIELDS` output (``|``-separated, comment last)."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", len(SACCT_FIELDS) - 1)
        if len(parts) != len(SACCT_FIELDS):
            raise SlurmJobError(
                f"unexpected sacct output line {line!r}: want fields {', '.join(SACCT_FIELDS)}"
            )
        row = dict(zip(SACCT_FIELDS, parts, strict=True))
        state = SlurmJobState.parse(row["State"])
        exit_code, sig = parse_exit_code(row["ExitCode"]) if state.is_terminal() else (None, None)
        jobs.append(
            SlurmJobInfo(
                job_id=row["JobID"],
                name=row["JobName"],
                state=state,
                exit_code=exit_code,
                signal=sig,
                reason=clean_value(row["Reason"]),
                partition=clean_value(row["Partition"]),
                nodes=clean_value(row["NodeList"]),
                comment=clean_value(row["Comment"]),
                work_dir=clean_value(row["WorkDir"]),
            )
        )
    return jobs


def parse_sbatch_parsable(text: str) -> str:
    """``sbatch --parsable`` prints ``jobid`` or ``jobid;cluster``."""
    line = text.strip().splitlines()[-1] if text.strip() else ""
    job_id = line.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise SlurmJobError(f"sbatch did not print a job id (output {text.strip()!r})")
    return job_id


SQUEUE_LOOKUP_FORMAT = "JobID:|,Comment:|"


def parse_squeue_lookup(text: str) -> list[tuple[str, str | None]]:
    """Parse ``squeue -h -O`` :data:`SQUEUE_LOOKUP_FORMAT` into ``(job_id, comment)`` pairs."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        job_id, _, rest = line.partition("|")
        comment = rest[:-1] if rest.endswith("|") else rest
        rows.append((job_id.strip(), clean_value(comment.strip())))
    return rows


_GRES_ITEM = re.compile(r"([^,(]+)(?:\([^)]*\))?")


def parse_gres(raw: str | None) -> dict[tuple[str, str | None], int]:
    """Parse ``Gres``/``GresUsed`` text such as ``gpu:a100:2(S:0-1),gpu:v100:1(IDX:0)``.

    Returns counts keyed by ``(name, type)``; an untyped entry has type None. Commas inside
    the parenthesised socket/index lists do not split entries.
    """
    counts: dict[tuple[str, str | None], int] = {}
    if not raw or raw in ("(null)", "N/A"):
        return counts
    for match in _GRES_ITEM.finditer(raw):
        item = match.group(1).strip().strip(",")
        if not item:
            continue
        parts = item.split(":")
        name = parts[0]
        gres_type: str | None = None
        count = 1
        if len(parts) >= 2 and parts[-1].isdigit():
            count = int(parts[-1])
            if len(parts) >= 3:
                gres_type = ":".join(parts[1:-1])
        elif len(parts) >= 2:
            gres_type = ":".join(parts[1:])
        key = (name, gres_type)
        counts[key] = counts.get(key, 0) + count
    return counts


SINFO_NODE_FORMAT = "NodeList:|,Partition:|,StateLong:|,CPUsState:|,Gres:|,GresUsed:|"


def parse_sinfo_nodes(text: str) -> list[SlurmNodeGres]:
    """Parse ``sinfo -h -N -O`` :data:`SINFO_NODE_FORMAT`: one row per (node, partition)."""
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        # Gres/GresUsed never contain "|", so splitting on it is unambiguous.
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 6:
            raise SlurmJobError(f"unexpected sinfo output line {line!r}: want {SINFO_NODE_FORMAT}")
        node, partition, state, cpus_state, gres, gres_used = parts[:6]
        cpu_fields = cpus_state.split("/")
        cpus_idle = int(cpu_fields[1]) if len(cpu_fields) == 4 and cpu_fields[1].isdigit() else None
        nodes.append(
            SlurmNodeGres(
                node=node,
                partition=partition.rstrip("*"),
                state=state,
                gres=parse_gres(gres),
                gres_used=parse_gres(gres_used),
                cpus_idle=cpus_idle,
                is_default_partition=partition.endswith("*"),
            )
        )
    return nodes


def job_id_sort_key(job_id: str) -> tuple[int, ...]:
    """Order ``12``, ``12_3`` (array task) and ``12+1`` (het job) ids numerically."""
    return tuple(int(part) for part in re.findall(r"\d+", job_id))
