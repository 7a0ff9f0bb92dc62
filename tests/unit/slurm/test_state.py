from __future__ import annotations

import pytest
from nuro_ml.exceptions import SlurmJobError
from nuro_ml.slurm.state import SlurmJobState

TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
    "REVOKED",
}


@pytest.mark.parametrize("state", list(SlurmJobState))
def test_terminal_states(state):
    assert state.is_terminal() is (state.value in TERMINAL)


def test_only_completed_is_success():
    assert [s for s in SlurmJobState if s.is_success()] == [SlurmJobState.COMPLETED]


def test_state_is_a_string():
    assert SlurmJobState.RUNNING == "RUNNING"
    assert f"{SlurmJobState.FAILED}" == "FAILED"


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("CANCELLED by 0", SlurmJobState.CANCELLED),
        ("COMPLETED+", SlurmJobState.COMPLETED),
        (" RUNNING ", SlurmJobState.RUNNING),
        ("OUT_OF_MEMORY", SlurmJobState.OUT_OF_MEMORY),
    ],
)
def test_parse_printed_states(raw, state):
    assert SlurmJobState.parse(raw) is state


def test_unknown_state_is_named():
    with pytest.raises(SlurmJobError, match="unknown Slurm job state 'LAUNCHED'"):
        SlurmJobState.parse("LAUNCHED")
