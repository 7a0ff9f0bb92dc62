"""AWS back end: how many GPUs of an EC2 instance type the account may still launch.

EC2 limits GPU instances by vCPUs per quota class and market, not by GPUs: "Running
On-Demand P instances" (``L-417A185B``), "Running On-Demand G and VT instances"
(``L-DB2E81BA``) and their Spot twins (``L-7212CCBC``, ``L-3819A6DF``). For each pool (one
instance type and market) the back end reads that quota from Service Quotas, the instance
type's vCPUs and GPUs from ``DescribeInstanceTypes`` and the vCPUs already running in the
same class from ``DescribeInstances``, then converts headroom into whole instances and GPUs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nuro_ml.capacity.backends.base import CapacityBackend, CapacityBackendConfig, PoolCapacity
from nuro_ml.clients import aws
from nuro_ml.exceptions import CapacityError

#: (quota class, market) -> Service Quotas code for EC2, in vCPUs.
QUOTA_CODES: dict[tuple[str, str], str] = {
    ("P", "on-demand"): "L-417A185B",
    ("G", "on-demand"): "L-DB2E81BA",
    ("P", "spot"): "L-7212CCBC",
    ("G", "spot"): "L-3819A6DF",
}

_FAMILY = re.compile(r"^(?P<family>[a-z]+)\d")


def quota_class(instance_type: str) -> str:
    """The EC2 vCPU quota class of a GPU instance type (``P`` or ``G``; VT counts as G)."""
    match = _FAMILY.match(instance_type)
    family = match.group("family") if match else ""
    if family == "p":
        return "P"
    if family in ("g", "vt"):
        return "G"
    raise CapacityError(
        f"instance type {instance_type!r} is not in a GPU quota class (P, G or VT); "
        "set quota_code for the pool explicitly"
    )


class AwsPoolConfig(BaseModel):
    """One pool: an instance type in one market, optionally capped at ``max_instances``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    instance_type: str = Field(min_length=1)
    market: Literal["on-demand", "spot"] = "on-demand"
    max_instances: int | None = Field(default=None, ge=0)
    #: Service Quotas code to read instead of the one derived from the instance family.
    quota_code: str | None = None
    #: vCPU quota to assume when the account cannot read Service Quotas.
    vcpu_quota: int | None = Field(default=None, ge=0)


class AwsBackendConfig(CapacityBackendConfig):
    """``{"type": "aws", "pools": [{"name": "a100", "instance_type": "p4d.24xlarge"}]}``."""

    type: Literal["aws"] = "aws"
    region_name: str = "us-east-1"
    pools: tuple[AwsPoolConfig, ...] = Field(min_length=1)
    #: Connection with the credentials (login: access key id, password: secret; under Airflow an
    #: Airflow connection); without it, boto3's default credential chain is used.
    aws_conn_id: str | None = None
    endpoint_url: str | None = None


class AwsBackend(CapacityBackend):
    """GPU launch headroom per instance type from EC2 and Service Quotas (boto3)."""

    config_class = AwsBackendConfig
    config: AwsBackendConfig

    @cached_property
    def session(self) -> Any:
        return aws.settings(self.config.aws_conn_id, region_name=self.config.region_name).session()

    @cached_property
    def ec2(self) -> Any:
        return self.session.client("ec2", endpoint_url=self.config.endpoint_url)

    @cached_property
    def service_quotas(self) -> Any:
        return self.session.client("service-quotas", endpoint_url=self.config.endpoint_url)

    def instance_types(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``DescribeInstanceTypes`` for ``names``, keyed by type."""
        wanted = sorted(set(names))
        found: dict[str, dict[str, Any]] = {}
        try:
            paginator = self.ec2.get_paginator("describe_instance_types")
            for page in paginator.paginate(InstanceTypes=wanted):
                for item in page["InstanceTypes"]:
                    found[item["InstanceType"]] = item
        except Exception as err:
            raise CapacityError(
                f"EC2 DescribeInstanceTypes failed for {wanted} in {self.config.region_name}: {err}"
            ) from err
        missing = [name for name in wanted if name not in found]
        if missing:
            raise CapacityError(f"EC2 does not know instance type(s) {missing} in {self.config.region_name}")
        return found

    def vcpu_quota(self, pool: AwsPoolConfig) -> int:
        if pool.vcpu_quota is not None:
            return pool.vcpu_quota
        code = pool.quota_code or QUOTA_CODES[(quota_class(pool.instance_type), pool.market)]
        try:
            answer = self.service_quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)
        except Exception as err:
            raise CapacityError(
                f"pool {pool.name!r}: Service Quotas ec2/{code} unreadable in {self.config.region_name} "
                f"({err}); set vcpu_quota in the pool config to bypass"
            ) from err
        return int(answer["Quota"]["Value"])

    def running_instances(self) -> list[dict[str, Any]]:
        """Pending and running instances (both count against the vCPU quotas)."""
        instances: list[dict[str, Any]] = []
        try:
            paginator = self.ec2.get_paginator("describe_instances")
            pages = paginator.paginate(
                Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
            )
            for page in pages:
                for reservation in page["Reservations"]:
                    instances.extend(reservation["Instances"])
        except Exception as err:
            raise CapacityError(f"EC2 DescribeInstances failed in {self.config.region_name}: {err}") from err
        return instances

    def get_capacity(self) -> list[PoolCapacity]:
        instances = self.running_instances()
        types = self.instance_types(
            [pool.instance_type for pool in self.config.pools] + [i["InstanceType"] for i in instances]
        )
        capacities: list[PoolCapacity] = []
        for pool in self.config.pools:
            info = types[pool.instance_type]
            gpus = info.get("GpuInfo", {}).get("Gpus") or []
            gpus_per_instance = sum(int(g.get("Count", 0)) for g in gpus)
            if gpus_per_instance <= 0:
                raise CapacityError(f"pool {pool.name!r}: instance type {pool.instance_type!r} has no GPUs")
            vcpus_per_instance = int(info["VCpuInfo"]["DefaultVCpus"])
            klass = quota_class(pool.instance_type) if pool.quota_code is None else None
            used_vcpus = 0
            running_same_type = 0
            for instance in instances:
                market = "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand"
                if market != pool.market:
                    continue
                other = instance["InstanceType"]
                if instance["InstanceType"] == pool.instance_type:
                    running_same_type += 1
                elif klass is None or _safe_class(other) != klass:
                    continue
                cpu = instance.get("CpuOptions") or {}
                if cpu.get("CoreCount") and cpu.get("ThreadsPerCore"):
                    used_vcpus += int(cpu["CoreCount"]) * int(cpu["ThreadsPerCore"])
                else:
                    used_vcpus += int(types[other]["VCpuInfo"]["DefaultVCpus"])
            quota = self.vcpu_quota(pool)
            max_instances = quota // vcpus_per_instance
            launchable = max(0, quota - used_vcpus) // vcpus_per_instance
            if pool.max_instances is not None:
                max_instances = min(max_instances, pool.max_instances)
                launchable = min(launchable, max(0, pool.max_instances - running_same_type))
            capacities.append(
                PoolCapacity(
                    pool=pool.name,
                    total_gpus=max_instances * gpus_per_instance,
                    free_gpus=min(launchable, max_instances) * gpus_per_instance,
                    gpu_type=gpus[0].get("Name"),
                    source=f"aws ec2 {self.config.region_name} {pool.instance_type} {pool.market}",
                )
            )
        return capacities


def _safe_class(instance_type: str) -> str | None:
    try:
        return quota_class(instance_type)
    except CapacityError:
        return None
