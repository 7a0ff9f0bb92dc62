"""Static and AWS capacity back ends (AWS through moto; Service Quotas through botocore's Stubber)."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from nuro_ml.capacity.backends import load_backend
from nuro_ml.capacity.backends.aws import AwsBackend, quota_class
from nuro_ml.capacity.backends.ray import RayBackend
from nuro_ml.exceptions import CapacityError
from pydantic import ValidationError

REGION = "us-east-1"


def test_static_backend_reports_configured_pools() -> None:
    backend = load_backend(
        {
            "type": "static",
            "pools": [{"name": "local", "total_gpus": 4}, {"name": "a100", "total_gpus": 8, "free_gpus": 3}],
        }
    )
    assert [(c.pool, c.total_gpus, c.free_gpus, c.source) for c in backend.get_capacity()] == [
        ("local", 4, 4, "static"),
        ("a100", 8, 3, "static"),
    ]


def test_static_backend_rejects_typos_and_impossible_numbers() -> None:
    with pytest.raises(ValidationError, match="total_gpu"):
        load_backend({"type": "static", "pools": [{"name": "local", "total_gpu": 4}]})
    with pytest.raises(ValidationError, match="exceeds total_gpus"):
        load_backend({"type": "static", "pools": [{"name": "local", "total_gpus": 4, "free_gpus": 5}]})


def test_ray_backend_config_picks_the_endpoint() -> None:
    assert load_backend({"type": "ray", "address": "http://127.0.0.1:8265/"}).config.uses_dashboard
    gcs = load_backend({"type": "ray", "address": "127.0.0.1:6379"})
    assert isinstance(gcs, RayBackend) and not gcs.config.uses_dashboard
    with pytest.raises(ValidationError, match="Ray Client address"):
        load_backend({"type": "ray", "address": "ray://127.0.0.1:10001"})


def test_ray_backend_names_an_unreachable_dashboard() -> None:
    backend = load_backend({"type": "ray", "address": "http://127.0.0.1:9", "timeout_seconds": 2})
    with pytest.raises(CapacityError, match=r"Ray dashboard http://127.0.0.1:9/api/cluster_status"):
        backend.get_capacity()


def test_quota_classes() -> None:
    assert quota_class("p4d.24xlarge") == "P"
    assert quota_class("g5.xlarge") == "G"
    assert quota_class("vt1.3xlarge") == "G"
    with pytest.raises(CapacityError, match="not in a GPU quota class"):
        quota_class("m5.large")


def quota_response(code: str, value: float) -> dict:
    return {
        "Quota": {
            "ServiceCode": "ec2",
            "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
            "QuotaCode": code,
            "QuotaName": "Running On-Demand instances",
            "Value": value,
            "Unit": "None",
            "Adjustable": True,
            "GlobalQuota": False,
        }
    }


@pytest.fixture
def aws():
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        ec2.run_instances(ImageId=image, InstanceType="p4d.24xlarge", MinCount=2, MaxCount=2)
        ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=1, MaxCount=1)
        stopped = ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=1, MaxCount=1)
        ec2.stop_instances(InstanceIds=[stopped["Instances"][0]["InstanceId"]])
        yield ec2


def test_aws_backend_turns_vcpu_quotas_into_gpus(aws) -> None:
    backend = load_backend(
        {
            "type": "aws",
            "region_name": REGION,
            "pools": [
                {"name": "a100", "instance_type": "p4d.24xlarge"},
                {"name": "a10g", "instance_type": "g5.xlarge", "max_instances": 3},
            ],
        }
    )
    assert isinstance(backend, AwsBackend)
    with Stubber(backend.service_quotas) as stub:
        stub.add_response(
            "get_service_quota",
            quota_response("L-417A185B", 384.0),
            {"ServiceCode": "ec2", "QuotaCode": "L-417A185B"},
        )
        stub.add_response(
            "get_service_quota",
            quota_response("L-DB2E81BA", 64.0),
            {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"},
        )
        capacity = {c.pool: c for c in backend.get_capacity()}
        stub.assert_no_pending_responses()
    # 384 vCPUs of P quota / 96 per p4d.24xlarge = 4 instances of 8 A100s; 2 run already.
    assert (capacity["a100"].total_gpus, capacity["a100"].free_gpus, capacity["a100"].gpu_type) == (
        32,
        16,
        "A100",
    )
    # 64 vCPUs / 4 per g5.xlarge = 16, capped at 3 instances; 1 runs (the stopped one does not count).
    assert (capacity["a10g"].total_gpus, capacity["a10g"].free_gpus, capacity["a10g"].gpu_type) == (
        3,
        2,
        "A10G",
    )


def test_aws_backend_reports_unreadable_quota(aws) -> None:
    backend = load_backend({"type": "aws", "pools": [{"name": "a100", "instance_type": "p4d.24xlarge"}]})
    with Stubber(backend.service_quotas) as stub:
        stub.add_client_error("get_service_quota", "NoSuchResourceException", "no such quota")
        with pytest.raises(CapacityError, match=r"Service Quotas ec2/L-417A185B unreadable.*set vcpu_quota"):
            backend.get_capacity()
    override = load_backend(
        {"type": "aws", "pools": [{"name": "a100", "instance_type": "p4d.24xlarge", "vcpu_quota": 192}]}
    )
    assert [(c.total_gpus, c.free_gpus) for c in override.get_capacity()] == [(16, 0)]


def test_aws_backend_rejects_types_without_gpus(aws) -> None:
    backend = load_backend(
        {"type": "aws", "pools": [{"name": "cpu", "instance_type": "m5.large", "quota_code": "L-1216C47A"}]}
    )
    with pytest.raises(CapacityError, match=r"'m5\.large' has no GPUs"):
        backend.get_capacity()


class _OneConnection:
    """A connection resolver outside Airflow (a script or the simulator would install one)."""

    def __init__(self, fields) -> None:
        self.fields = fields
        self.asked: list[str] = []

    def connection(self, conn_id: str):
        self.asked.append(conn_id)
        return self.fields


def test_aws_backend_takes_a_named_connection_from_the_installed_resolver(aws) -> None:
    from nuro_ml.clients import connections
    from nuro_ml.clients.aws import AwsSettings
    from nuro_ml.clients.connections import ConnectionFields

    fields = ConnectionFields(
        conn_id="fleet",
        login="AKIDFLEET",
        password="fleet-secret",
        extra={"region_name": REGION, "aws_session_token": "tok"},
    )
    resolver = _OneConnection(fields)
    connections.set_resolver(resolver)  # type: ignore[arg-type]
    try:
        backend = load_backend(
            {
                "type": "aws",
                "region_name": "eu-west-1",
                "aws_conn_id": "fleet",
                "pools": [{"name": "a100", "instance_type": "p4d.24xlarge", "vcpu_quota": 192}],
            }
        )
        credentials = backend.session.get_credentials()
        # The connection's region beats the back end's; its keys and token are the session's.
        assert (backend.session.region_name, credentials.access_key, credentials.token) == (
            REGION,
            "AKIDFLEET",
            "tok",
        )
        assert [(c.pool, c.total_gpus, c.free_gpus) for c in backend.get_capacity()] == [("a100", 16, 0)]
        assert resolver.asked == ["fleet"]
    finally:
        connections.set_resolver(None)
    # The same settings give a remote job the same access, secret included only in its environment.
    env = AwsSettings.from_fields(fields, endpoint_url="http://127.0.0.1:9000").environment()
    assert env == {
        "AWS_ACCESS_KEY_ID": "AKIDFLEET",
        "AWS_SECRET_ACCESS_KEY": "fleet-secret",
        "AWS_SESSION_TOKEN": "tok",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
        "AWS_DEFAULT_REGION": REGION,
    }
    assert "fleet-secret" not in repr(AwsSettings.from_fields(fields))


def test_airflow_resolver_reads_connections_and_masks_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import json

    from airflow.sdk._shared.secrets_masker import redact
    from nuro_ml.clients import connections
    from nuro_ml.hooks.connections import AirflowConnections

    secret = "aws-secret-only-in-this-test-91c2"
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLEET_AWS",
        json.dumps(
            {"conn_type": "aws", "login": "AKIDFLEET", "password": secret, "extra": {"region_name": REGION}}
        ),
    )
    monkeypatch.setattr(connections, "_resolver", None)
    # With nothing installed, a named connection is Airflow's.
    assert isinstance(connections.resolver(), AirflowConnections)
    assert redact(f"key {secret}") == f"key {secret}"
    fields = connections.resolver().connection("fleet_aws")
    assert (fields.login, fields.password, fields.extra_dejson) == (
        "AKIDFLEET",
        secret,
        {"region_name": REGION},
    )
    assert redact(f"key {secret}") == "key ***"
    assert asyncio.run(connections.resolver().aconnection("fleet_aws")) == fields
