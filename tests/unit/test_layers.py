"""The layering in pyproject.toml is a contract: complete, enforced; libraries import without Airflow."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import nuro_ml

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(nuro_ml.__file__).resolve().parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]

#: Packages that must import in a process where Airflow cannot be imported at all.
AIRFLOW_FREE = (
    "capacity",
    "etl",
    "features",
    "training_data",
    "terraform_support",
    "clients",
    "kube",
    "slurm",
    "specs",
)


def _contract(contract_id: str) -> dict:
    return next(c for c in CONFIG["contracts"] if c["id"] == contract_id)


def _layer_names() -> set[str]:
    names: set[str] = set()
    for layer in _contract("layers")["layers"]:
        names.update(part.strip() for part in layer.replace(":", "|").split("|"))
    return names


def _lint_imports(root: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=root,
        env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_package_and_module_of_the_provider_has_a_layer() -> None:
    children = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.stem != "__init__")
    }
    named = _layer_names()
    assert sorted(children - named) == [], "add these to a layer in pyproject.toml [tool.importlinter]"
    assert sorted(named - children) == [], "these layers name nothing that exists"


def test_the_airflow_free_contract_covers_the_libraries_and_clients() -> None:
    sources = set(_contract("airflow-free")["source_modules"])
    assert {f"nuro_ml.{name}" for name in AIRFLOW_FREE} | {"workloads"} <= sources
    assert _contract("airflow-free")["forbidden_modules"] == ["airflow"]


def test_the_contracts_hold_and_a_forbidden_import_breaks_them(tmp_path: Path) -> None:
    # A copy of the provider with one library module reaching up into the hooks (and so into
    # Airflow): lint-imports must reject it and name the import, while the real tree passes.
    for root in CONFIG["root_packages"]:
        source = PACKAGE if root == "nuro_ml" else REPO / root
        shutil.copytree(source, tmp_path / root, ignore=shutil.ignore_patterns("__pycache__", "data"))
    config = tmp_path / "importlinter.toml"
    config.write_text((REPO / "pyproject.toml").read_text())

    clean = _lint_imports(tmp_path, config)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 broken" in clean.stdout

    (tmp_path / "nuro_ml" / "capacity" / "shortcut.py").write_text(
        "from nuro_ml.hooks.ray import RayHook\n\nHOOK = RayHook\n"
    )
    broken = _lint_imports(tmp_path, config)
    assert broken.returncode != 0
    assert "nuro_ml.capacity is not allowed to import nuro_ml.hooks" in broken.stdout
    assert "nuro_ml.capacity.shortcut -> nuro_ml.hooks.ray" in broken.stdout
    # The same edge also breaks the Airflow-free contract, through the hook's own imports.
    assert "nuro_ml.capacity is not allowed to import airflow" in broken.stdout


def test_libraries_and_clients_import_where_airflow_cannot(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys

        class NoAirflow:
            def find_spec(self, name, path=None, target=None):
                if name == "airflow" or name.startswith("airflow."):
                    raise ModuleNotFoundError(f"importing {{name}} is forbidden here", name=name)
                return None

        sys.meta_path.insert(0, NoAirflow())
        imported = []
        for package in {AIRFLOW_FREE!r}:
            root = importlib.import_module("nuro_ml." + package)
            imported.append(root.__name__)
            for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
                importlib.import_module(info.name)
                imported.append(info.name)
        assert not [m for m in sys.modules if m == "airflow" or m.startswith("airflow.")]

        # A named connection needs a resolver; without Airflow the error says what to do.
        from nuro_ml.clients import connections
        from nuro_ml.exceptions import NuroMLException
        try:
            connections.resolver()
        except NuroMLException as err:
            assert "set_resolver" in str(err), err
        else:
            raise AssertionError("resolver() found Airflow")
        print(" ".join(imported))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = set(done.stdout.split())
    assert {
        "nuro_ml.capacity.policy",
        "nuro_ml.capacity.sim.engine",
        "nuro_ml.capacity.backends.kubernetes",
        "nuro_ml.capacity.backends.slurm",
        "nuro_ml.capacity.backends.aws",
        "nuro_ml.etl.job",
        "nuro_ml.features.materialize",
        "nuro_ml.clients.ray",
        "nuro_ml.clients.kubernetes",
        "nuro_ml.slurm.nodes",
    } <= imported
