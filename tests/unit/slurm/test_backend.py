from __future__ import annotations

from pathlib import Path

import pytest
from nuro_ml.capacity.backends import load_backend
from nuro_ml.capacity.backends.slurm import SlurmBackend, SlurmBackendConfig
from nuro_ml.exceptions import CapacityError
from nuro_ml.slurm.parsing import parse_sinfo_nodes
from pydantic import ValidationError

DATA = Path(__file__).parent / "data"


def nodes(*names: str):
    return [node for name in names for node in parse_sinfo_nodes((DATA / name).read_text())]


def pools(rows, **config):
    backend = SlurmBackend(SlurmBackendConfig(**config))
    return [(p.pool, p.total_gpus, p.free_gpus, p.gpu_type, p.source) for p in backend.pools_from_nodes(rows)]


@pytest.mark.parametrize(
    ("capture", "total", "free"),
    [
        ("sinfo_idle.txt", 4, 4),
        ("sinfo_mixed.txt", 4, 1),
        # gpu:1 used, but the job holds every CPU: nothing else can start there.
        ("sinfo_allocated.txt", 4, 0),
        # A drained node is not capacity at all.
        ("sinfo_drained.txt", 0, 0),
    ],
)
def test_gpus_from_captured_sinfo(capture, total, free):
    assert pools(nodes(capture)) == [("debug", total, free, None, "slurm:debug")]


def test_pool_name_mapping_and_partition_filter():
    assert pools(nodes("sinfo_mixed.txt"), partitions=("debug",), pool_for_partition={"debug": "local"}) == [
        ("local", 4, 1, None, "slurm:debug")
    ]


def test_unknown_partition_is_named():
    with pytest.raises(CapacityError, match="partition\\(s\\) a100 not found; sinfo shows debug"):
        pools(nodes("sinfo_idle.txt"), partitions=("a100",))


def test_typed_gpus_across_nodes_and_partitions():
    text = (
        "n1|gpu*|mixed|4/60/0/64|gpu:a100:8(S:0-1)|gpu:a100:6(IDX:0-5)|\n"
        "n2|gpu*|idle|0/64/0/64|gpu:a100:4(S:0),gpu:v100:2(S:1)|gpu:a100:0(IDX:N/A),gpu:v100:0(IDX:N/A)|\n"
        "n2|debug|idle|0/64/0/64|gpu:a100:4(S:0),gpu:v100:2(S:1)|gpu:a100:0(IDX:N/A),gpu:v100:0(IDX:N/A)|\n"
        "n3|gpu*|down*|0/0/64/64|gpu:a100:8|gpu:a100:0|\n"
    )
    rows = parse_sinfo_nodes(text)
    assert pools(rows) == [("gpu", 14, 8, None, "slurm:gpu"), ("debug", 6, 6, None, "slurm:debug")]
    assert pools(rows, gpu_type="a100") == [
        ("gpu", 12, 6, "a100", "slurm:gpu"),
        ("debug", 4, 4, "a100", "slurm:debug"),
    ]
    assert pools(rows, partitions=("gpu",), gpu_type="v100") == [("gpu", 2, 2, "v100", "slurm:gpu")]


def test_config_is_strict_and_loadable_by_short_name():
    backend = load_backend({"type": "slurm", "slurm_conf": "/etc/slurm/slurm.conf", "partitions": ["gpu"]})
    assert isinstance(backend, SlurmBackend)
    assert backend.config.partitions == ("gpu",)
    with pytest.raises(ValidationError, match="partiton"):
        SlurmBackendConfig(partiton=["gpu"])  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SlurmBackendConfig(type="ray")  # type: ignore[arg-type]


def test_unreachable_cluster_is_a_capacity_error(tmp_path):
    backend = SlurmBackend(SlurmBackendConfig(slurm_conf=str(tmp_path / "absent.conf")))
    with pytest.raises(
        CapacityError, match=r"slurm backend: reading nodes with sinfo failed: .*absent\.conf"
    ):
        backend.get_capacity()
