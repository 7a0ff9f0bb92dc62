"""Static checks of the Terraform tree, including configurations whose providers are not installable."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from nuro_ml import settings
from nuro_ml.terraform_support.binary import find_terraform_binary
from nuro_ml.terraform_support.config import ModuleConfig
from nuro_ml.terraform_support.static_check import check_module, check_tree, module_dirs

TERRAFORM = settings.terraform_dir()


def test_every_shipped_configuration_is_consistent():
    problems = check_tree(TERRAFORM)

    assert [str(p) for p in problems] == []
    assert {d.relative_to(TERRAFORM).as_posix() for d in module_dirs(TERRAFORM)} == {
        "environments/local",
        "environments/existing",
        "environments/aws",
        "modules/gpu_cluster",
    }


def test_terraform_fmt_is_clean():
    result = subprocess.run(
        [find_terraform_binary(), "fmt", "-check", "-recursive", "-list=true", "-no-color", str(TERRAFORM)],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, f"unformatted: {result.stdout}{result.stderr}"


def test_gpu_cluster_module_declares_the_platform_pieces():
    module = ModuleConfig.load(TERRAFORM / "modules" / "gpu_cluster")

    assert {
        "aws_eks_cluster.this",
        "aws_eks_node_group.gpu",
        "aws_eks_node_group.system",
        "aws_autoscaling_group_tag.gpu_node_template",
        "helm_release.kuberay_operator",
        "helm_release.kueue",
        "helm_release.kueue_queues",
    } <= set(module.resources)
    assert {"gpu_pools", "team_quotas"} <= module.required_variables()
    gpu_group = module.resources["aws_eks_node_group.gpu"]
    assert gpu_group["for_each"] == "${local.gpu_node_groups}"
    assert gpu_group["ami_type"] == '"AL2_x86_64_GPU"'
    assert {"cluster_endpoint", "gpu_node_groups", "kueue_cluster_queues", "kueue_local_queues"} <= set(
        module.outputs
    )
    chart = TERRAFORM / "modules" / "gpu_cluster" / "charts" / "kueue-queues" / "templates" / "queues.yaml"
    assert "kind: ClusterQueue" in chart.read_text()


def test_aws_environment_wires_the_module_with_shared_state():
    environment = ModuleConfig.load(TERRAFORM / "environments" / "aws")

    assert environment.backend_type == "pg"
    assert list(environment.modules) == ["gpu_cluster"]
    assert environment.modules["gpu_cluster"]["source"] == '"../../modules/gpu_cluster"'


SEEDED = """
terraform {
  required_providers {
    aws = {
      source = "hashicorp/aws"
    }
  }
}

variable "used" {
  type = string
}

variable "unused" {
  type = string
}

locals {
  name = "x-${var.used}"
}

resource "aws_s3_bucket" "logs" {
  bucket = "${local.name}-${var.missing_var}-${local.missing_local}"
  policy = data.aws_iam_policy_document.missing.json
  tags   = { owner = aws_iam_role.missing.arn }
}

module "child" {
  source   = "./child"
  used     = aws_s3_bucket.logs.id
  typo_arg = 1
}

output "child_value" {
  value = module.child.nope
}

output "ghost" {
  value = module.ghost.id
}

output "chart" {
  value = "${path.module}/charts/absent"
}
"""

CHILD = """
variable "used" {
  type = string
}

variable "required_too" {
  type = number
}

output "id" {
  value = "${var.used}-${var.required_too}"
}
"""


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    (tmp_path / "child").mkdir()
    (tmp_path / "main.tf").write_text(SEEDED)
    (tmp_path / "child" / "main.tf").write_text(CHILD)
    return tmp_path


def test_seeded_mistakes_are_all_reported(seeded):
    messages = sorted(p.message for p in check_module(seeded))

    assert messages == sorted(
        [
            "var.missing_var is not declared",
            "local.missing_local is not declared",
            "data.aws_iam_policy_document.missing is not declared",
            "resource aws_iam_role.missing is not declared",
            "module.child.nope: module child has no such output",
            "module.ghost is not declared",
            "${path.module}/charts/absent does not exist",
            "variable unused is declared but never used",
            "module child: argument typo_arg is not a variable of child",
            "module child: required variable required_too of child is not set",
        ]
    )


def test_unparseable_file_is_reported(tmp_path):
    (tmp_path / "broken.tf").write_text('resource "x" "y" {\n  a = \n')

    problems = check_module(tmp_path)

    assert len(problems) == 1 and problems[0].location.endswith("/broken.tf")
    assert problems[0].message.startswith("does not parse")
