"""Reading every node's GPU (GRES) use, blocking or asyncio, by Slurm commands or slurmrestd."""

from __future__ import annotations

from nuro_ml.slurm import cli
from nuro_ml.slurm.connection import SlurmClusterSettings
from nuro_ml.slurm.models import SlurmNodeGres
from nuro_ml.slurm.parsing import parse_sinfo_nodes
from nuro_ml.slurm.rest import nodes_from_rest


def read_nodes(settings: SlurmClusterSettings, *, timeout: float) -> list[SlurmNodeGres]:
    """Every (node, partition) pair with its GRES configured and in use."""
    rest = settings.rest_client(timeout)
    if rest is not None:
        return nodes_from_rest(rest.request("GET", "nodes").get("nodes") or [])
    return parse_sinfo_nodes(
        cli.run_command(cli.sinfo_nodes_argv(), slurm_conf=settings.slurm_conf, timeout=timeout)
    )


async def aread_nodes(settings: SlurmClusterSettings, *, timeout: float) -> list[SlurmNodeGres]:
    """:func:`read_nodes` without blocking the event loop."""
    rest = settings.rest_client(timeout)
    if rest is not None:
        return nodes_from_rest((await rest.arequest("GET", "nodes")).get("nodes") or [])
    output = await cli.arun_command(cli.sinfo_nodes_argv(), slurm_conf=settings.slurm_conf, timeout=timeout)
    return parse_sinfo_nodes(output)
