"""Prices (bundled table, Pricing API and spot history), placement, GPU-hours, scale-down advice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import ANY, Stubber
from nuro_ml.capacity.cost import (
    HOURS_PER_MONTH,
    PoolPricing,
    PriceCatalog,
    cheapest_placement,
    gpu_hours_by_team,
    idle_by_pool,
    scale_down_recommendations,
)
from nuro_ml.capacity.records import Lease, LeaseState, Pool
from nuro_ml.exceptions import CapacityError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def lease(
    lease_id: str, team: str, gpus: int, start_h: float, end_h: float | None, pool: str = "a100"
) -> Lease:
    acquired = T0 + timedelta(hours=start_h)
    released = None if end_h is None else T0 + timedelta(hours=end_h)
    return Lease(
        lease_id=lease_id,
        key=lease_id,
        team=team,
        pool=pool,
        gpus=gpus,
        nodes=1,
        priority=0,
        state=LeaseState.RELEASED if released else LeaseState.ACTIVE,
        acquired_at=acquired,
        heartbeat_at=acquired,
        expires_at=acquired + timedelta(hours=12),
        ttl_seconds=43200,
        released_at=released,
    )


def test_bundled_catalog() -> None:
    catalog = PriceCatalog.bundled()
    p4d = catalog.get("p4d.24xlarge")
    assert (p4d.gpus, p4d.gpu_type, p4d.source) == (8, "A100", "bundled")
    assert p4d.gpu_hour("on-demand") == pytest.approx(p4d.on_demand / 8)
    assert p4d.spot is not None and p4d.spot < p4d.on_demand
    with pytest.raises(CapacityError, match=r"no price known for instance type 'x1\.nope'"):
        catalog.get("x1.nope")


def test_cheapest_placement_uses_whole_instances() -> None:
    catalog = PriceCatalog.bundled()
    a100 = cheapest_placement(catalog, 12, gpu_types=["A100"], markets=["on-demand"], hours=2)
    assert (a100.instance_type, a100.instances, a100.gpus) == ("p4d.24xlarge", 2, 16)
    assert a100.total_cost == pytest.approx(2 * 2 * catalog.get("p4d.24xlarge").on_demand)
    spot = cheapest_placement(catalog, 12, gpu_types=["a100"])
    assert spot.market == "spot" and spot.hourly_cost < a100.hourly_cost
    anything = cheapest_placement(catalog, 1, markets=["on-demand"])
    assert anything.hourly_cost == min(p.on_demand for p in catalog.prices.values() if p.gpus == 1)
    with pytest.raises(CapacityError, match="no instance type offers 4 GPUs of type"):
        cheapest_placement(catalog, 4, gpu_types=["TPU"])


def test_gpu_hours_idle_and_scale_down() -> None:
    catalog = PriceCatalog.bundled()
    pricing = {"a100": PoolPricing("p4d.24xlarge")}
    leases = [
        lease("l1", "perception", 4, 0, 2),  # 8 GPU-hours
        lease("l2", "planning", 2, 1, None),  # active: 2 GPUs x 9 h to the end of the window
        lease("l3", "planning", 8, -5, -1),  # outside the window
    ]
    end = T0 + timedelta(hours=10)
    usage = {
        (u.team, u.pool): u for u in gpu_hours_by_team(leases, T0, end, catalog=catalog, pricing=pricing)
    }
    assert usage[("perception", "a100")].gpu_hours == pytest.approx(8)
    assert usage[("planning", "a100")].gpu_hours == pytest.approx(18)
    rate = catalog.get("p4d.24xlarge").on_demand / 8
    assert usage[("perception", "a100")].cost == pytest.approx(8 * rate, abs=1e-3)

    (idle,) = idle_by_pool([Pool("a100", 16)], leases, T0, end)
    assert (idle.capacity_gpu_hours, idle.used_gpu_hours, idle.peak_gpus) == (160, 26, 6)
    assert idle.idle_gpu_hours == pytest.approx(134)
    (advice,) = scale_down_recommendations([idle], catalog=catalog, pricing=pricing)
    # Peak 6 GPUs + 20% headroom = 8: one p4d.24xlarge instead of two.
    assert advice.recommended_capacity == 8
    assert advice.monthly_saving == pytest.approx(8 * rate * HOURS_PER_MONTH, abs=0.01)
    busy = idle_by_pool([Pool("a100", 8)], [lease("b", "x", 8, 0, 10)], T0, end)
    assert scale_down_recommendations(busy, catalog=catalog, pricing=pricing) == []


class _Session:
    def __init__(self, clients: dict[str, object]) -> None:
        self.clients = clients

    def client(self, name: str, region_name: str | None = None) -> object:
        return self.clients[name]


def _price_list(instance_type: str, usd: str, gpus: str, vcpus: str) -> str:
    return json.dumps(
        {
            "product": {"attributes": {"instanceType": instance_type, "gpu": gpus, "vcpu": vcpus}},
            "terms": {
                "OnDemand": {"T1": {"priceDimensions": {"D1": {"unit": "Hrs", "pricePerUnit": {"USD": usd}}}}}
            },
        }
    )


def test_live_prices_from_pricing_api_and_spot_history_with_fallback() -> None:
    pricing = boto3.client(
        "pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(pricing) as price_stub, Stubber(ec2) as ec2_stub:
        price_stub.add_response(
            "get_products",
            {
                "PriceList": [_price_list("p4d.24xlarge", "30.5000000000", "8", "96")],
                "FormatVersion": "aws_v1",
            },
            {"ServiceCode": "AmazonEC2", "Filters": ANY, "MaxResults": 10},
        )
        ec2_stub.add_response(
            "describe_spot_price_history",
            {
                "SpotPriceHistory": [
                    {"InstanceType": "p4d.24xlarge", "SpotPrice": "11.0", "AvailabilityZone": "us-east-1a"},
                    {"InstanceType": "p4d.24xlarge", "SpotPrice": "9.5", "AvailabilityZone": "us-east-1b"},
                ]
            },
            {
                "InstanceTypes": ["p4d.24xlarge"],
                "ProductDescriptions": ["Linux/UNIX"],
                "StartTime": ANY,
                "MaxResults": 100,
            },
        )
        price_stub.add_client_error("get_products", "ThrottlingException", "slow down")
        ec2_stub.add_client_error("describe_spot_price_history", "UnauthorizedOperation", "no")
        catalog = PriceCatalog.from_aws(
            ["p4d.24xlarge", "g5.xlarge"], session=_Session({"pricing": pricing, "ec2": ec2})
        )
        price_stub.assert_no_pending_responses()
        ec2_stub.assert_no_pending_responses()
    live = catalog.get("p4d.24xlarge")
    assert (live.on_demand, live.spot, live.gpus, live.source) == (30.5, 9.5, 8, "pricing-api+spot-history")
    fallback = catalog.get("g5.xlarge")
    bundled = PriceCatalog.bundled().get("g5.xlarge")
    assert (fallback.on_demand, fallback.spot, fallback.source) == (
        bundled.on_demand,
        bundled.spot,
        "bundled+bundled",
    )
