"""Command lines and environment for the Terraform CLI, built from typed arguments.

Every command runs non-interactively (``-input=false``, ``TF_IN_AUTOMATION=1``), with machine-readable
output where Terraform 1.0 has it (``-json`` for plan/apply/destroy/validate/show/output), and with an
explicit lock timeout wherever state is locked.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nuro_ml.exceptions import TerraformError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_DURATION = re.compile(r"^\d+(?:ms|s|m|h)$")


def hcl_value(value: Any) -> str:
    """Encode a Python value the way Terraform parses ``-var``/``TF_VAR_`` values.

    Strings are taken literally by Terraform for string variables; everything else is parsed as an
    HCL expression, and JSON is valid HCL expression syntax for numbers, bools, lists and objects.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError as err:
        raise TerraformError(f"value {value!r} cannot be passed to Terraform: {err}") from None


def hcl_string_literal(value: str) -> str:
    """Quote a string for an HCL file; ``${`` and ``%{`` would otherwise start a template."""
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def check_name(name: str, kind: str = "variable") -> str:
    if not _IDENTIFIER.match(name):
        raise TerraformError(
            f"invalid Terraform {kind} name {name!r}: must be a letter or _ then [A-Za-z0-9_-]"
        )
    return name


def lock_timeout_arg(timeout: str | int | float) -> str:
    """``-lock-timeout=…`` from ``"90s"``/``"5m"`` or a number of seconds."""
    text = f"{int(timeout)}s" if isinstance(timeout, int | float) else str(timeout).strip()
    if not _DURATION.match(text):
        raise TerraformError(f"invalid lock timeout {timeout!r}: use a duration such as '90s' or '5m'")
    return f"-lock-timeout={text}"


def var_args(variables: Mapping[str, Any]) -> list[str]:
    """``-var name=value`` pairs; Terraform rejects names the root module does not declare."""
    args: list[str] = []
    for name in sorted(variables):
        args += ["-var", f"{check_name(name)}={hcl_value(variables[name])}"]
    return args


def backend_config_text(config: Mapping[str, Any]) -> str:
    """Render backend settings as an HCL file for ``-backend-config=<file>``.

    A file keeps secrets such as a PostgreSQL ``conn_str`` off the command line (visible in ``ps``).
    """
    lines = []
    for key in sorted(config):
        value = config[key]
        check_name(key, "backend setting")
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int | float):
            rendered = json.dumps(value)
        elif isinstance(value, str):
            rendered = hcl_string_literal(value)
        else:
            raise TerraformError(
                f"backend setting {key!r} must be a string, number or bool, got {type(value).__name__}"
            )
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def init_args(
    *,
    plugin_dirs: Sequence[Path],
    backend_config_file: Path | None,
    lockfile_readonly: bool,
) -> list[str]:
    args = ["init", "-input=false", "-no-color", "-reconfigure"]
    args += [f"-plugin-dir={d}" for d in plugin_dirs]
    if backend_config_file is not None:
        args.append(f"-backend-config={backend_config_file}")
    if lockfile_readonly:
        # Shipped configurations commit .terraform.lock.hcl; init must verify it, never rewrite it.
        args.append("-lockfile=readonly")
    return args


def workspace_select_args(name: str) -> list[str]:
    return ["workspace", "select", "-no-color", check_name(name, "workspace")]


def workspace_new_args(name: str, *, lock_timeout: str | int | float) -> list[str]:
    return ["workspace", "new", "-no-color", lock_timeout_arg(lock_timeout), check_name(name, "workspace")]


def validate_args() -> list[str]:
    return ["validate", "-json", "-no-color"]


def plan_args(
    *,
    out: Path,
    variables: Mapping[str, Any],
    lock_timeout: str | int | float,
    destroy: bool = False,
    detailed_exitcode: bool = False,
    refresh_only: bool = False,
) -> list[str]:
    args = ["plan", "-input=false", "-json", lock_timeout_arg(lock_timeout), f"-out={out}"]
    if destroy:
        args.append("-destroy")
    if refresh_only:
        args.append("-refresh-only")
    if detailed_exitcode:
        args.append("-detailed-exitcode")
    return args + var_args(variables)


def apply_args(
    *,
    lock_timeout: str | int | float,
    plan_file: Path | None = None,
    variables: Mapping[str, Any] | None = None,
) -> list[str]:
    args = ["apply", "-input=false", "-json", lock_timeout_arg(lock_timeout)]
    if plan_file is not None:
        if variables:
            raise TerraformError(
                "variables cannot be set when applying a saved plan; they were fixed at plan time"
            )
        return [*args, str(plan_file)]
    return [*args, "-auto-approve", *var_args(variables or {})]


def destroy_args(*, variables: Mapping[str, Any], lock_timeout: str | int | float) -> list[str]:
    return [
        "destroy",
        "-input=false",
        "-json",
        "-auto-approve",
        lock_timeout_arg(lock_timeout),
        *var_args(variables),
    ]


def show_plan_args(plan_file: Path) -> list[str]:
    return ["show", "-json", "-no-color", str(plan_file)]


def state_pull_args() -> list[str]:
    return ["state", "pull"]


def output_args() -> list[str]:
    return ["output", "-json", "-no-color"]


def terraform_env(
    *,
    data_dir: Path,
    secret_variables: Mapping[str, Any],
    extra_env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for one Terraform process.

    Secret variables travel as ``TF_VAR_<name>`` so that they appear neither on the command line nor in
    any file. ``CHECKPOINT_DISABLE`` stops Terraform from calling HashiCorp's version-check service.
    """
    env = dict(os.environ if base_env is None else base_env)
    # An inherited TF_WORKSPACE would silently override the workspace the hook selects.
    env.pop("TF_WORKSPACE", None)
    env.update(extra_env or {})
    env.update(
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
        TF_DATA_DIR=str(data_dir),
    )
    for name, value in secret_variables.items():
        env[f"TF_VAR_{check_name(name)}"] = hcl_value(value)
    return env
