"""The openb pod-list parser shared by the timed replay and the FGD protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
from nuro_ml.capacity.sim.openb import load_pods
from nuro_ml.capacity.sim.pod_list import ALIBABA_COLUMNS
from nuro_ml.capacity.sim.trace import load_alibaba
from nuro_ml.exceptions import CapacityError

DATA = Path(__file__).parent / "data"
HEADER = ",".join(ALIBABA_COLUMNS)


def _pod_list(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "openb_pod_list_test.csv"
    path.write_text("\n".join((HEADER, *rows)) + "\n")
    return path


def test_readers_keep_different_rows_of_one_file_read_alike() -> None:
    path = DATA / "openb_pod_list_sample.csv"
    pods = {p.name: p for p in load_pods(path)}
    trace = load_alibaba(path, milli=True)
    jobs = {j.id: j for j in trace.jobs}
    # The FGD protocol takes every pod's demand; the replay only GPU pods that ran.
    assert len(pods) == 12 and len(jobs) == 9 and set(jobs) < set(pods)
    assert pods["openb-pod-0002"].demand.total_milli == 0  # CPU-only
    assert pods["openb-pod-0006"].scheduled is None  # never ran
    for name, job in jobs.items():
        pod = pods[name]
        assert job.gpus == pod.demand.total_milli
        assert job.team == pod.qos
        assert pod.scheduled is not None and pod.deleted is not None
        assert job.duration == pod.deleted - pod.scheduled
    assert (pods["openb-pod-0001"].demand.gpu_milli, jobs["openb-pod-0001"].gpus) == (460, 460)
    assert pods["openb-pod-0005"].demand.gpu_model == "V100M16|V100M32"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            "p,4000,1024,two,1000,,LS,Running,0,10,0",
            r"openb_pod_list_test.csv:3: column 'num_gpu' must be a number, got 'two'",
        ),
        (
            "p,4000,1024,1,1500,,LS,Running,0,10,0",
            r"openb_pod_list_test.csv:3: gpu_milli must be 1..1000 for a GPU pod, got 1500",
        ),
        (
            "p,4000,1024,2,500,,LS,Running,0,10,0",
            r"openb_pod_list_test.csv:3: a pod with 2 GPUs must take whole GPUs",
        ),
        (
            "p,4000,1024,1,1000,,LS,Running,,10,0",
            r"openb_pod_list_test.csv:3: column 'creation_time' is empty",
        ),
        (
            "p,4000,1024,1,1000,,LS,Running,0,10,-5",
            r"openb_pod_list_test.csv:3: column 'scheduled_time' must be >= 0 seconds",
        ),
    ],
)
def test_both_readers_name_a_bad_cell_the_same_way(tmp_path: Path, row: str, message: str) -> None:
    path = _pod_list(tmp_path, "ok,4000,1024,1,1000,,LS,Running,0,10,0", row)
    with pytest.raises(CapacityError, match=message):
        load_pods(path)
    with pytest.raises(CapacityError, match=message):
        load_alibaba(path)


def test_empty_gpu_share_means_whole_gpus(tmp_path: Path) -> None:
    path = _pod_list(tmp_path, "p,4000,1024,2,,,LS,Running,0,10,0")
    assert load_pods(path)[0].demand.total_milli == 2000
    assert load_alibaba(path, milli=True).jobs[0].gpus == 2000


def test_replay_refuses_a_scheduled_pod_without_end(tmp_path: Path) -> None:
    path = _pod_list(tmp_path, "p,4000,1024,1,1000,,LS,Running,0,,5")
    assert load_pods(path)[0].deleted is None
    with pytest.raises(CapacityError, match=r":2: pod 'p' was scheduled but has no deletion_time"):
        load_alibaba(path)


def test_missing_pod_list_is_a_clear_error(tmp_path: Path) -> None:
    for reader in (load_pods, load_alibaba):
        with pytest.raises(CapacityError, match=r"pod list .*absent.csv does not exist"):
            reader(tmp_path / "absent.csv")
