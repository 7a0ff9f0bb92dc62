"""The hook module keeps exporting what operators, triggers, back ends and DAG authors import."""

from __future__ import annotations

import nuro_ml.hooks.slurm as hook_module
import pytest
from nuro_ml.slurm import cli, connection, models, parsing, rest, rest_client, state, submit

MOVED = {
    "SlurmJobState": state,
    "SlurmJobInfo": models,
    "SlurmJobSpec": models,
    "SlurmNodeGres": models,
    "SlurmClusterSettings": connection,
    "SlurmRestClient": rest_client,
    "build_sbatch_args": cli,
    "parse_sinfo_nodes": parsing,
    "job_info_from_rest": rest,
    "job_environment": submit,
}


def test_every_exported_name_resolves():
    assert [name for name in hook_module.__all__ if not hasattr(hook_module, name)] == []


@pytest.mark.parametrize(("name", "home"), sorted(MOVED.items(), key=lambda kv: kv[0]))
def test_hook_module_re_exports_the_same_objects(name, home):
    assert name in hook_module.__all__
    assert getattr(hook_module, name) is getattr(home, name)


def test_hooks_are_defined_in_the_hook_module():
    for name in ("SlurmHook", "AsyncSlurmHook", "SlurmHookProtocol"):
        assert getattr(hook_module, name).__module__ == "nuro_ml.hooks.slurm"
