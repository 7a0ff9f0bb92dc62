"""The hook module exports its hooks and the records of their signatures, and nothing else."""

from __future__ import annotations

import nuro_ml.hooks.slurm as hook_module
import pytest
from nuro_ml.slurm import models

RECORDS = ("SlurmJobInfo", "SlurmJobSpec", "SlurmNodeGres")
HOOKS = ("AsyncSlurmHook", "SlurmHook", "SlurmHookProtocol")


def test_exports_are_the_hooks_and_their_records() -> None:
    assert sorted(hook_module.__all__) == sorted(HOOKS + RECORDS)


@pytest.mark.parametrize("name", RECORDS)
def test_records_are_the_objects_of_nuro_ml_slurm(name: str) -> None:
    assert getattr(hook_module, name) is getattr(models, name)


def test_hooks_are_defined_in_the_hook_module() -> None:
    for name in HOOKS:
        assert getattr(hook_module, name).__module__ == "nuro_ml.hooks.slurm"
