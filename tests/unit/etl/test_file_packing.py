"""Recordings packed into Spark tasks by Spark's file-source rules."""

from __future__ import annotations

import pytest
from nuro_ml.etl.file_packing import MAX_PARTITION_BYTES, OPEN_COST_BYTES, conf_bytes, pack, spark_tasks

MB = 1 << 20


def _sizes(groups: list[list[int]]) -> list[list[int]]:
    return [sorted(g, reverse=True) for g in groups]


def test_small_recordings_share_tasks_up_to_the_split_size() -> None:
    # 24 drives of 44 MB on 2 cores: the split is 128 MiB, so two drives (44 + 4 + 44) fit and
    # a third would not (96 + 4 + 44 > 128).
    sizes = [44 * MB] * 24
    groups = spark_tasks(sizes, lambda s: s, lambda _key: None, 2)
    assert [len(g) for g in groups] == [2] * 12
    assert [s for g in groups for s in g] == sizes


def test_every_core_gets_work_when_the_input_is_small() -> None:
    # 4 MB in all on 2 cores: the split drops to the bytes per core, not one task for everything.
    sizes = [MB] * 4
    groups = spark_tasks(sizes, lambda s: s, lambda _key: None, 2)
    assert len(groups) == 2


def test_a_recording_larger_than_the_split_is_a_task_of_its_own_and_goes_first() -> None:
    sizes = [10 * MB, 3 * 1024 * MB, 20 * MB, 2 * 1024 * MB]
    groups = pack(sizes, lambda s: s, MAX_PARTITION_BYTES)
    assert _sizes(groups) == [[3 * 1024 * MB], [2 * 1024 * MB], [20 * MB, 10 * MB]]


def test_open_cost_keeps_many_tiny_files_from_piling_into_one_task() -> None:
    sizes = [1024] * 100
    groups = pack(sizes, lambda s: s, 40 * MB, open_cost=OPEN_COST_BYTES)
    # Each file counts 4 MiB more: 10 per 40 MiB task.
    assert [len(g) for g in groups] == [10] * 10


def test_the_sessions_settings_tune_the_packing_as_they_tune_spark_read() -> None:
    settings = {"spark.sql.files.maxPartitionBytes": "64m", "spark.sql.files.openCostInBytes": "0"}
    sizes = [30 * MB] * 8
    groups = spark_tasks(sizes, lambda s: s, settings.get, 2)
    assert [len(g) for g in groups] == [2] * 4
    settings["spark.sql.files.minPartitionNum"] = "8"
    assert len(spark_tasks(sizes, lambda s: s, settings.get, 2)) == 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("134217728", 134217728),
        ("128m", 128 * MB),
        ("128MB", 128 * MB),
        ("4mb", 4 * MB),
        ("1g", 1 << 30),
        ("512b", 512),
    ],
)
def test_spark_size_strings(text: str, expected: int) -> None:
    assert conf_bytes(text, 7) == expected


def test_an_unset_size_is_the_default() -> None:
    assert conf_bytes(None, 7) == 7
