"""openb node lists and pod lists, the openb-shaped generator, and the FGD protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
from nuro_ml.capacity.placement import MILLI, NodeSpec
from nuro_ml.capacity.sim.openb import (
    generate_openb_like,
    load_node_list,
    load_pods,
    write_node_list,
    write_pod_list,
)
from nuro_ml.capacity.sim.protocol import run_protocol, run_seeds
from nuro_ml.capacity.sim.trace import load_alibaba, scale_time
from nuro_ml.cli import main
from nuro_ml.exceptions import CapacityError


@pytest.fixture(scope="module")
def openb_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    nodes, pods = generate_openb_like(nodes=60, seed=3)
    folder = tmp_path_factory.mktemp("openb")
    return (
        write_node_list(nodes, folder / "openb_node_list_gpu_node.csv"),
        write_pod_list(pods, folder / "openb_pod_list_default.csv"),
    )


def test_generated_files_read_back_in_openb_shape(openb_files: tuple[Path, Path]) -> None:
    node_path, pod_path = openb_files
    assert node_path.read_text().splitlines()[0] == "sn,cpu_milli,memory_mib,gpu,model"
    nodes = load_node_list(node_path)
    pods = load_pods(pod_path)
    assert len(nodes) == 60 and len(pods) == round(60 * 8152 / 1213)
    assert {n.gpus for n in nodes} <= {1, 2, 4, 8}
    gpu_pods = [p for p in pods if p.demand.total_milli]
    sharing = [p for p in gpu_pods if p.demand.sharing]
    assert 0.38 < len(sharing) / len(gpu_pods) < 0.50  # openb: 44%
    assert all(0 < p.demand.gpu_milli < MILLI for p in sharing)
    # The timed replay reads the same file, sharing pods at their share in milli-GPUs.
    trace = load_alibaba(pod_path, milli=True)
    shares = {j.id: j.gpus for j in trace.jobs}
    assert any(0 < v < MILLI for v in shares.values())
    assert scale_time(trace, 10).jobs[-1].submit == pytest.approx(trace.jobs[-1].submit / 10, abs=0.01)


def test_bad_node_list_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "nodes.csv"
    path.write_text("sn,cpu_milli,memory_mib,gpu,model\nn1,64000,1024,two,V100\n")
    with pytest.raises(CapacityError, match=r"nodes.csv:2: column 'gpu' must be a number, got 'two'"):
        load_node_list(path)
    path.write_text("name,gpu\nn1,2\n")
    with pytest.raises(CapacityError, match="not an openb node list, missing columns"):
        load_node_list(path)


def test_protocol_fills_to_target_without_overallocating(openb_files: tuple[Path, Path]) -> None:
    nodes, pods = load_node_list(openb_files[0]), load_pods(openb_files[1])
    for policy in ("first-fit", "best-fit", "fgd", "ours"):
        run = run_protocol(nodes, pods, policy, seed=1, step=0.25)
        assert [p.arrived for p in run.points] == [0.25, 0.5, 0.75, 1.0]
        unallocated = [p.unallocated for p in run.points]
        assert all(0 <= u <= 1 for u in unallocated)
        assert unallocated == sorted(unallocated, reverse=True)  # nothing departs
        assert run.points[0].unallocated == pytest.approx(0.75, abs=0.05)  # everything fits early on
        assert run.placed + run.failed > 0
    again = run_protocol(nodes, pods, "fgd", seed=1, step=0.25)
    assert again.points == run_protocol(nodes, pods, "fgd", seed=1, step=0.25).points


def test_seeds_give_mean_and_spread(openb_files: tuple[Path, Path]) -> None:
    nodes, pods = load_node_list(openb_files[0]), load_pods(openb_files[1])
    stats, runs = run_seeds(nodes, pods, ["best-fit"], seeds=[0, 1, 2], step=0.5)
    finals = [r.final.unallocated for r in runs]
    assert stats[0].seeds == 3
    assert stats[0].final_unallocated == pytest.approx(sum(finals) / 3)
    assert stats[0].unallocated_std[-1] >= 0


def test_sim_cli_runs_the_fgd_protocol_and_plots(
    openb_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_path, pod_path = openb_files
    argv = ["sim", str(pod_path), "--nodes", str(node_path), "--protocol", "fgd"]
    assert main([*argv, "--seeds", "2", "--placement", "best-fit,fgd", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 seed(s)" in out and "best-fit" in out and "fgd" in out
    assert (tmp_path / "fgd_unallocated.png").stat().st_size > 0
    assert (tmp_path / "fgd_fragmented.png").stat().st_size > 0
    assert main(["sim", str(pod_path), "--protocol", "fgd"]) == 2
    assert "--protocol fgd needs a pod list TRACE and --nodes NODE_LIST" in capsys.readouterr().err
    assert main([*argv, "--placement", "worst-fit"]) == 2
    assert "unknown ['worst-fit']" in capsys.readouterr().err


def test_timed_replay_reads_the_node_list_and_states_the_time_scale(
    openb_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_path, pod_path = openb_files
    gpus = sum(n.gpus for n in load_node_list(node_path))
    argv = ["sim", str(pod_path), "--nodes", str(node_path), "--time-scale", "20", "--no-plots"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"capacity {{'gpu': {gpus * 1000}}} milli-GPUs, time scale 20x" in out
    assert "BE wait p50/p95/max" in out


def test_timed_replay_quotas_read_gpus_fractions_and_milli_gpus(
    openb_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node_path, pod_path = openb_files
    argv = ["sim", str(pod_path), "--limit", "50", "--no-plots", "--out", str(tmp_path)]
    quotas = ["--quota", "BE=2500m", "--quota", "LS=1.5", "--quota", "Burstable=4"]
    assert main([*argv, "--nodes", str(node_path), *quotas]) == 0
    assert "quotas: BE@gpu 2.5 GPUs, LS@gpu 1.5 GPUs, Burstable@gpu 4 GPUs" in capsys.readouterr().out
    # Counted in whole GPUs (--gpus), a share of a GPU cannot be a quota.
    assert main([*argv, "--gpus", "8", "--quota", "BE=2500m"]) == 2
    assert "--quota 'BE=2500m': a fraction of a GPU needs the cluster counted in milli-GPUs" in (
        capsys.readouterr().err
    )
    assert main([*argv, "--gpus", "8", "--quota", "BE=2000m"]) == 0
    assert "quotas: BE@gpu 2 GPUs" in capsys.readouterr().out
    assert main([*argv, "--gpus", "8", "--quota", "BE=lots"]) == 2
    assert "expected GPUs (4, 2.5) or milli-GPUs (2500m), got 'lots'" in capsys.readouterr().err


def test_fgd_is_deterministic_and_matches_ours_when_names_follow_node_order(
    openb_files: tuple[Path, Path],
) -> None:
    # Generated node names sort in node order, as openb's do: the simulator's tie rule
    # (smallest name) and ours (earliest node) then place every pod alike.
    nodes, pods = load_node_list(openb_files[0]), load_pods(openb_files[1])
    assert [n.name for n in nodes] == sorted(n.name for n in nodes)
    fgd = run_protocol(nodes, pods, "fgd", seed=2, step=0.5)
    assert fgd.points == run_protocol(nodes, pods, "ours", seed=2, step=0.5).points
    # Listed in reverse, the earliest node is the largest name: the rules part ways, and
    # fgd still places by name (sums over nodes differ only in rounding).
    backwards = tuple(reversed(nodes))

    def outcome(policy: str, listed: tuple[NodeSpec, ...]) -> list[tuple[float, float, int]]:
        run = run_protocol(listed, pods, policy, seed=2, step=0.5)
        return [(p.unallocated, round(p.fragmented, 9), p.failed_pods) for p in run.points]

    assert outcome("fgd", backwards) == outcome("fgd", nodes)
    assert outcome("ours", backwards) != outcome("fgd", nodes)
