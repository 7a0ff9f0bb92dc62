"""The task-instance key, and the ids every engine stored under it before it existed.

The ``STORED`` values were produced by the previous version of each builder (Ray submission
ids, RayJob names and annotations, Slurm job comments and names, lease keys, ETL run keys,
Terraform plan paths). Engines and the ledger keep them across upgrades, so a retried task
must derive exactly the same ids to find its earlier work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest, lease_key
from nuro_ml.etl.job import result_path
from nuro_ml.hooks.ray import RayJobStatus
from nuro_ml.hooks.slurm import SlurmJobInfo
from nuro_ml.kube.naming import IDENTITY_ANNOTATION, identity_annotations, owned_by, rayjob_name
from nuro_ml.operators.ray import RayJobOperator
from nuro_ml.operators.slurm import SlurmJobOperator, job_comment, job_name
from nuro_ml.operators.spark import MCAPToParquetOperator
from nuro_ml.operators.terraform import TerraformPlanOperator
from nuro_ml.slurm.client import jobs_named
from nuro_ml.task_key import TaskKey, TaskKeyError
from nuro_ml.terraform_support.layout import EnvironmentLayout
from nuro_ml.ui.capacity_data import overview

from tests.unit.ray.stubs import FakeRayHook, TaskInstanceStub
from workloads.train_xgboost import result_line


@dataclass(frozen=True)
class Stored:
    key: TaskKey
    ray_submission_id: str
    rayjob_name: str
    lease_key: str
    etl_run_key: str
    terraform_plan: str
    slurm_comment: str
    slurm_job_name: str


STORED = [
    Stored(
        TaskKey("av_training_pipeline", "scheduled__2026-11-24T00:00:00+00:00", "train"),
        ray_submission_id="av_training_pipeline-train-ee4787cfa074",
        rayjob_name="train-ee4787cfa0",
        lease_key="av_training_pipeline/scheduled__2026-11-24T00:00:00+00:00/train/-1",
        etl_run_key="av_training_pipeline__scheduled__2026-11-24T00_00_00_00_00__train__-1",
        terraform_plan="plans/team-a/av_training_pipeline/scheduled__2026-11-24T00_00_00_00_00/train.tfplan",
        slurm_comment="nuro-ml:av_training_pipeline/scheduled__2026-11-24T00:00:00+00:00/train/-1",
        slurm_job_name="av_training_pipeline.train.390ddb516f17",
    ),
    Stored(
        TaskKey("Team A: Träining", "manual__2026-11-24T08:15:00.123456+00:00", "group.wait_for_gpus", 3),
        ray_submission_id="team-a-tr-ining-group-wait_for_gpus-3-4b87145653a2",
        rayjob_name="group-wait-for-gpus-4b87145653",
        lease_key="Team A: Träining/manual__2026-11-24T08:15:00.123456+00:00/group.wait_for_gpus/3",
        etl_run_key="Team_A__Tr_ining__manual__2026-11-24T08_15_00.123456_00_00__group.wait_for_gpus__3",
        terraform_plan=(
            "plans/team-a/Team_A_Tr_ining/manual__2026-11-24T08_15_00.123456_00_00/group.wait_for_gpus.3.tfplan"
        ),
        slurm_comment=(
            "nuro-ml:Team%20A:%20Tr%C3%A4ining/manual__2026-11-24T08:15:00.123456+00:00/group.wait_for_gpus/3"
        ),
        slurm_job_name="Team_A_Tr_ining.group.wait_for_gpus.a481f7ee3f03",
    ),
    Stored(
        TaskKey("etl", "backfill__a/b c", "decode", 0),
        ray_submission_id="etl-decode-0-2e9592bdc4d8",
        rayjob_name="decode-2e9592bdc4",
        lease_key="etl/backfill__a/b c/decode/0",
        etl_run_key="etl__backfill__a_b_c__decode__0",
        terraform_plan="plans/team-a/etl/backfill__a_b_c/decode.0.tfplan",
        slurm_comment="nuro-ml:etl/backfill__a%2Fb%20c/decode/0",
        slurm_job_name="etl.decode.21ae78c57808",
    ),
]
IDS = [s.key.dag_id for s in STORED]
SLURM_DATA = Path(__file__).parent / "slurm" / "data"


def ti_of(key: TaskKey, try_number: int = 2) -> TaskInstanceStub:
    return TaskInstanceStub(key.dag_id, key.run_id, key.task_id, key.map_index, try_number)


# -- the key itself ------------------------------------------------------------------------


@pytest.mark.parametrize("stored", STORED, ids=IDS)
def test_format_and_quoted_read_back_to_the_same_key(stored: Stored) -> None:
    key = stored.key
    assert TaskKey.parse(key.format()) == key
    assert TaskKey.parse(key.quoted(), quoted=True) == key
    assert str(key) == key.format()


def test_a_task_instance_without_a_map_index_is_unmapped() -> None:
    ti = TaskInstanceStub(map_index=None)  # type: ignore[arg-type]
    key = TaskKey.of(ti)
    assert key.map_index == -1 and not key.mapped
    assert key.for_task("gate") == TaskKey(ti.dag_id, ti.run_id, "gate", -1)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("dag/run/task", "expected dag_id/run_id/task_id/map_index"),
        ("dag/run/task/first", "map index 'first' is not an integer"),
        ("/run/task/0", "expected dag_id/run_id/task_id/map_index"),
        ("cli-request", "expected dag_id/run_id/task_id/map_index"),
    ],
)
def test_text_that_is_not_a_key_is_refused_naming_it(text: str, problem: str) -> None:
    with pytest.raises(TaskKeyError, match=problem) as err:
        TaskKey.parse(text)
    assert repr(text) in str(err.value)
    assert TaskKey.try_parse(text) is None


def test_a_quoted_key_has_exactly_four_parts() -> None:
    with pytest.raises(TaskKeyError):
        TaskKey.parse("etl/backfill__a/b/decode/0", quoted=True)


# -- ids stored by the previous version still resolve --------------------------------------


@pytest.mark.parametrize("stored", STORED, ids=IDS)
def test_a_retry_reattaches_to_the_ray_job_an_earlier_try_submitted(stored: Stored) -> None:
    hook = FakeRayHook()
    logs = result_line({"metrics": {"auc": 0.9}}) + "\n"
    hook.add(
        stored.ray_submission_id,
        RayJobStatus.SUCCEEDED,
        logs=logs,
        nuro_ml_task_instance=stored.lease_key,
        airflow_try_number="1",
    )
    op = RayJobOperator(task_id=stored.key.task_id, entrypoint="python train.py", deferrable=False)
    op.__dict__["hook"] = hook

    result = op.execute({"ti": ti_of(stored.key)})  # type: ignore[arg-type]

    assert hook.submitted == []
    assert result["submission_id"] == stored.ray_submission_id


@pytest.mark.parametrize("stored", STORED, ids=IDS)
def test_a_rayjob_of_an_earlier_try_has_the_same_name_and_owner(stored: Stored) -> None:
    assert rayjob_name(stored.key) == stored.rayjob_name
    annotations = identity_annotations(stored.key, try_number=2)
    assert annotations[IDENTITY_ANNOTATION] == stored.lease_key
    # The annotation an earlier try wrote on the RayJob still names this task instance.
    assert owned_by({IDENTITY_ANNOTATION: stored.lease_key}, stored.key)
    assert not owned_by({IDENTITY_ANNOTATION: stored.lease_key}, stored.key.for_task("other"))


class SlurmctldReply:
    """The job lookup of :class:`SlurmHook` over a slurmrestd ``GET jobs`` reply."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = jobs

    def find_jobs_by_name(self, name: str, comment: str | None = None) -> list[SlurmJobInfo]:
        return jobs_named(self.jobs, name, comment)


@pytest.mark.parametrize("stored", STORED, ids=IDS)
def test_a_slurm_job_of_an_earlier_try_is_found_by_name_and_comment(stored: Stored) -> None:
    (running,) = json.loads((SLURM_DATA / "rest_job_running.json").read_text())["jobs"]
    earlier_try = {**running, "name": stored.slurm_job_name, "comment": stored.slurm_comment}
    other_task = {**running, "job_id": 4, "name": stored.slurm_job_name, "comment": "nuro-ml:d/r/t/-1"}
    op = SlurmJobOperator(task_id=stored.key.task_id, script="echo hi", working_directory="/scratch")
    op.__dict__["hook"] = SlurmctldReply([other_task, earlier_try])

    spec = op.build_spec(op.task_key({"ti": ti_of(stored.key)}))  # type: ignore[arg-type]
    found = op.find_previous_job(spec)

    assert found is not None and found.job_id == str(running["job_id"])
    assert (job_name(stored.key), job_comment(stored.key)) == (stored.slurm_job_name, stored.slurm_comment)


@pytest.mark.parametrize("stored", STORED, ids=IDS)
def test_a_lease_taken_by_an_earlier_try_is_found_and_shown(stored: Stored, tmp_path: Path) -> None:
    ledger = QuotaLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.upsert_pool("a100", capacity=8)
    ledger.upsert_quota("perception", "a100", nominal=8)
    held = ledger.acquire(
        LeaseRequest(key=stored.lease_key, team="perception", pool="a100", gpus=2, ttl_seconds=3600)
    )

    assert lease_key(TaskKey.of(ti_of(stored.key))) == stored.lease_key
    found = ledger.active_lease(lease_key(stored.key))
    assert found is not None and found.lease_id == held.lease_id

    [shown] = overview(ledger).leases
    assert (shown.dag_id, shown.run_id, shown.task_id, shown.map_index) == (
        stored.key.dag_id,
        stored.key.run_id,
        stored.key.task_id,
        stored.key.map_index,
    )


@pytest.mark.parametrize("stored", STORED, ids=IDS)
def test_an_etl_run_of_an_earlier_try_keeps_its_result_file(stored: Stored, tmp_path: Path) -> None:
    written = tmp_path / "out" / "_runs" / f"{stored.etl_run_key}.json"
    written.parent.mkdir(parents=True)
    written.write_text("{}")
    (tmp_path / "raw").mkdir()
    op = MCAPToParquetOperator(
        task_id=stored.key.task_id,
        start="2026-11-24",
        end="2026-11-25",
        input_path=str(tmp_path / "raw"),
        output_path=str(tmp_path / "out"),
        quarantine_path=str(tmp_path / "quarantine"),
    )

    cfg = op._config({"ti": ti_of(stored.key)})  # type: ignore[arg-type]

    assert cfg.run_key == stored.etl_run_key
    assert result_path(cfg.output_path, cfg.run_key) == written


@pytest.mark.parametrize("stored", STORED, ids=IDS)
def test_a_terraform_plan_saved_by_an_earlier_try_is_found(stored: Stored, tmp_path: Path) -> None:
    layout = EnvironmentLayout(tmp_path)
    operator = TerraformPlanOperator(task_id=stored.key.task_id, working_dir=str(tmp_path))
    key = operator.build_hook({"ti": ti_of(stored.key)}).run_key  # type: ignore[arg-type]
    assert key is not None
    assert layout.plan_file("team-a", key) == tmp_path / stored.terraform_plan
