"""GPU cost: instance prices, cheapest placement, GPU-hours and idle capacity, scale-down advice.

Prices come from the AWS Pricing API (On-Demand) and EC2 spot price history through boto3;
when those cannot be read (no credentials, no network, unknown type) the bundled table in
``data/ec2_gpu_prices.json`` is used and every price says which source it came from.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Literal

from nuro_ml.capacity.records import Lease, LeaseState, Pool
from nuro_ml.clients import aws
from nuro_ml.exceptions import CapacityError

log = logging.getLogger(__name__)

Market = Literal["on-demand", "spot"]
HOURS_PER_MONTH = 730.0

#: Pricing API ``location`` names of the regions the platform deploys to.
REGION_LOCATIONS: dict[str, str] = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)",
    "eu-central-1": "EU (Frankfurt)",
    "ap-northeast-1": "Asia Pacific (Tokyo)",
}


@dataclass(frozen=True)
class InstancePrice:
    """Hourly prices of one EC2 instance type; ``source`` says where each figure came from."""

    instance_type: str
    gpus: int
    gpu_type: str
    vcpus: int
    on_demand: float
    spot: float | None = None
    source: str = "bundled"

    def hourly(self, market: Market) -> float | None:
        return self.on_demand if market == "on-demand" else self.spot

    def gpu_hour(self, market: Market = "on-demand") -> float | None:
        price = self.hourly(market)
        return None if price is None else price / self.gpus


class PriceCatalog:
    """Prices by instance type."""

    def __init__(self, prices: Iterable[InstancePrice], region: str = "us-east-1") -> None:
        self.region = region
        self.prices: dict[str, InstancePrice] = {p.instance_type: p for p in prices}

    def __contains__(self, instance_type: object) -> bool:
        return instance_type in self.prices

    def get(self, instance_type: str) -> InstancePrice:
        try:
            return self.prices[instance_type]
        except KeyError:
            raise CapacityError(
                f"no price known for instance type {instance_type!r} in {self.region} "
                f"(known: {', '.join(sorted(self.prices))})"
            ) from None

    @classmethod
    def bundled(cls) -> PriceCatalog:
        """The fallback table shipped with the package."""
        text = resources.files("nuro_ml.capacity").joinpath("data/ec2_gpu_prices.json").read_text()
        table = json.loads(text)
        return cls(
            (
                InstancePrice(
                    instance_type=name,
                    gpus=int(row["gpus"]),
                    gpu_type=str(row["gpu_type"]),
                    vcpus=int(row["vcpus"]),
                    on_demand=float(row["on_demand"]),
                    spot=None if row.get("spot") is None else float(row["spot"]),
                    source="bundled",
                )
                for name, row in table["instance_types"].items()
            ),
            region=str(table["region"]),
        )

    @classmethod
    def from_aws(
        cls,
        instance_types: Sequence[str] | None = None,
        *,
        region: str = "us-east-1",
        session: Any | None = None,
        fallback: PriceCatalog | None = None,
    ) -> PriceCatalog:
        """Live prices for ``instance_types`` (default: those in the bundled table).

        On-Demand prices come from the Pricing API (served from us-east-1), spot prices from
        the lowest current ``DescribeSpotPriceHistory`` entry in ``region``. A type whose live
        price cannot be read keeps its bundled price; the log names it and why.
        """
        fallback = fallback or cls.bundled()
        names = list(instance_types or fallback.prices)
        if session is None:
            session = aws.AwsSettings(region_name=region).session()
        pricing = session.client("pricing", region_name="us-east-1")
        ec2 = session.client("ec2", region_name=region)
        prices: list[InstancePrice] = []
        for name in names:
            base = fallback.prices.get(name)
            try:
                on_demand, specs = _on_demand_price(pricing, name, region)
            except Exception as err:
                if base is None:
                    raise CapacityError(f"no On-Demand price for {name!r} in {region}: {err}") from err
                log.warning(
                    "Pricing API has no On-Demand price for %s (%s); using the bundled one", name, err
                )
                on_demand, specs = base.on_demand, None
            try:
                spot: float | None = _spot_price(ec2, name)
                spot_source = "spot-history"
            except Exception as err:
                log.warning("No spot price history for %s (%s); using the bundled one", name, err)
                spot = base.spot if base is not None else None
                spot_source = "bundled"
            gpus = specs["gpus"] if specs else base.gpus if base else 0
            if gpus <= 0:
                raise CapacityError(f"instance type {name!r} has no GPUs according to the Pricing API")
            prices.append(
                InstancePrice(
                    instance_type=name,
                    gpus=gpus,
                    gpu_type=(specs or {}).get("gpu_type") or (base.gpu_type if base else "unknown"),
                    vcpus=(specs or {}).get("vcpus") or (base.vcpus if base else 0),
                    on_demand=on_demand,
                    spot=spot,
                    source=f"{'pricing-api' if specs else 'bundled'}+{spot_source}",
                )
            )
        return cls(prices, region=region)


def _on_demand_price(pricing: Any, instance_type: str, region: str) -> tuple[float, dict[str, Any]]:
    location = REGION_LOCATIONS.get(region)
    if location is None:
        raise CapacityError(f"region {region!r} has no Pricing API location name configured")
    filters = [
        {"Type": "TERM_MATCH", "Field": "instanceType", "Value": instance_type},
        {"Type": "TERM_MATCH", "Field": "location", "Value": location},
        {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
        {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
        {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
        {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
    ]
    answer = pricing.get_products(ServiceCode="AmazonEC2", Filters=filters, MaxResults=10)
    for raw in answer.get("PriceList", []):
        product = json.loads(raw) if isinstance(raw, str) else raw
        attributes = product.get("product", {}).get("attributes", {})
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = float(dimension.get("pricePerUnit", {}).get("USD", "0"))
                if usd > 0:
                    # The price list names GPU count and vCPUs but not the GPU model.
                    specs = {
                        "gpus": int(attributes.get("gpu", "0") or 0),
                        "vcpus": int(attributes.get("vcpu", "0") or 0),
                    }
                    return usd, specs
    raise CapacityError(f"Pricing API returned no On-Demand Linux price for {instance_type} in {location}")


def _spot_price(ec2: Any, instance_type: str) -> float:
    answer = ec2.describe_spot_price_history(
        InstanceTypes=[instance_type],
        ProductDescriptions=["Linux/UNIX"],
        StartTime=datetime.now(UTC) - timedelta(hours=1),
        MaxResults=100,
    )
    prices = [float(item["SpotPrice"]) for item in answer.get("SpotPriceHistory", [])]
    if not prices:
        raise CapacityError(f"no spot price history for {instance_type}")
    return min(prices)


@dataclass(frozen=True)
class Placement:
    """Cheapest way to get ``gpus`` GPUs for ``hours``: whole instances of one type and market."""

    instance_type: str
    market: Market
    instances: int
    gpus: int
    hourly_cost: float
    total_cost: float
    gpu_type: str


def cheapest_placement(
    catalog: PriceCatalog,
    gpus: int,
    *,
    hours: float = 1.0,
    gpu_types: Iterable[str] | None = None,
    markets: Sequence[Market] = ("on-demand", "spot"),
    max_gpus_per_instance: int | None = None,
) -> Placement:
    """The cheapest instance type and market covering ``gpus`` GPUs with whole instances.

    Ties go to the placement wasting fewer GPUs, then on-demand (no interruption risk).
    """
    if gpus <= 0:
        raise CapacityError(f"a placement needs a positive GPU count, got {gpus}")
    allowed = None if gpu_types is None else {t.upper() for t in gpu_types}
    best: tuple[float, int, int, Placement] | None = None
    for price in catalog.prices.values():
        if allowed is not None and price.gpu_type.upper() not in allowed:
            continue
        if max_gpus_per_instance is not None and price.gpus > max_gpus_per_instance:
            continue
        instances = math.ceil(gpus / price.gpus)
        for market in markets:
            hourly = price.hourly(market)
            if hourly is None:
                continue
            placement = Placement(
                instance_type=price.instance_type,
                market=market,
                instances=instances,
                gpus=instances * price.gpus,
                hourly_cost=round(instances * hourly, 6),
                total_cost=round(instances * hourly * hours, 6),
                gpu_type=price.gpu_type,
            )
            rank = (placement.total_cost, placement.gpus - gpus, 0 if market == "on-demand" else 1, placement)
            if best is None or rank[:3] < best[:3]:
                best = rank
    if best is None:
        raise CapacityError(
            f"no instance type offers {gpus} GPUs of type {sorted(allowed) if allowed else 'any'} "
            f"in markets {list(markets)}"
        )
    return best[3]


@dataclass(frozen=True)
class PoolPricing:
    """How a pool is paid for: its instance type and market."""

    instance_type: str
    market: Market = "on-demand"


@dataclass(frozen=True)
class UsageLine:
    team: str
    pool: str
    gpu_hours: float
    cost: float | None


@dataclass(frozen=True)
class PoolIdle:
    pool: str
    capacity: int
    capacity_gpu_hours: float
    used_gpu_hours: float
    peak_gpus: int

    @property
    def idle_gpu_hours(self) -> float:
        return max(0.0, self.capacity_gpu_hours - self.used_gpu_hours)

    @property
    def utilization(self) -> float:
        return 0.0 if self.capacity_gpu_hours <= 0 else self.used_gpu_hours / self.capacity_gpu_hours


def _interval(lease: Lease, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    if lease.released_at is not None:
        stop = lease.released_at
    elif lease.state is LeaseState.EXPIRED:
        stop = lease.expires_at
    else:
        stop = end
    lo, hi = max(lease.acquired_at, start), min(stop, end)
    return (lo, hi) if hi > lo else None


def gpu_hours_by_team(
    leases: Iterable[Lease],
    start: datetime,
    end: datetime,
    *,
    catalog: PriceCatalog | None = None,
    pricing: Mapping[str, PoolPricing] | None = None,
) -> list[UsageLine]:
    """GPU-hours (and cost, where the pool's pricing is known) per team and pool in ``[start, end)``."""
    totals: dict[tuple[str, str], float] = {}
    for lease in leases:
        span = _interval(lease, start, end)
        if span is None:
            continue
        hours = lease.gpus * (span[1] - span[0]).total_seconds() / 3600.0
        totals[(lease.team, lease.pool)] = totals.get((lease.team, lease.pool), 0.0) + hours
    lines = []
    for (team, pool), hours in sorted(totals.items()):
        cost = None
        if catalog is not None and pricing and pool in pricing:
            rate = catalog.get(pricing[pool].instance_type).gpu_hour(pricing[pool].market)
            cost = None if rate is None else round(hours * rate, 4)
        lines.append(UsageLine(team, pool, round(hours, 6), cost))
    return lines


def idle_by_pool(
    pools: Iterable[Pool], leases: Sequence[Lease], start: datetime, end: datetime
) -> list[PoolIdle]:
    """Capacity, used and idle GPU-hours and the peak concurrent GPUs of every pool."""
    window_hours = max(0.0, (end - start).total_seconds() / 3600.0)
    result = []
    for pool in pools:
        events: list[tuple[datetime, int]] = []
        used = 0.0
        for lease in leases:
            if lease.pool != pool.name:
                continue
            span = _interval(lease, start, end)
            if span is None:
                continue
            used += lease.gpus * (span[1] - span[0]).total_seconds() / 3600.0
            events.extend([(span[0], lease.gpus), (span[1], -lease.gpus)])
        peak = current = 0
        for _when, delta in sorted(events, key=lambda e: (e[0], e[1])):
            current += delta
            peak = max(peak, current)
        result.append(PoolIdle(pool.name, pool.capacity, pool.capacity * window_hours, round(used, 6), peak))
    return result


@dataclass(frozen=True)
class ScaleDown:
    pool: str
    capacity: int
    peak_gpus: int
    recommended_capacity: int
    monthly_saving: float | None
    reason: str


def scale_down_recommendations(
    idle: Iterable[PoolIdle],
    *,
    catalog: PriceCatalog | None = None,
    pricing: Mapping[str, PoolPricing] | None = None,
    headroom: float = 0.2,
    min_utilization: float = 0.6,
) -> list[ScaleDown]:
    """Pools used below ``min_utilization`` whose peak (plus headroom) fits fewer instances."""
    advice = []
    for pool in idle:
        if pool.capacity <= 0 or pool.utilization >= min_utilization:
            continue
        step = 1
        rate = None
        if catalog is not None and pricing and pool.pool in pricing:
            price = catalog.get(pricing[pool.pool].instance_type)
            step = price.gpus
            rate = price.gpu_hour(pricing[pool.pool].market)
        needed = math.ceil(pool.peak_gpus * (1 + headroom))
        recommended = min(pool.capacity, max(step, math.ceil(needed / step) * step))
        if recommended >= pool.capacity:
            continue
        saving = None if rate is None else round((pool.capacity - recommended) * rate * HOURS_PER_MONTH, 2)
        advice.append(
            ScaleDown(
                pool=pool.pool,
                capacity=pool.capacity,
                peak_gpus=pool.peak_gpus,
                recommended_capacity=recommended,
                monthly_saving=saving,
                reason=(
                    f"utilization {pool.utilization:.0%}, peak {pool.peak_gpus} GPUs; "
                    f"{recommended} GPUs keep {headroom:.0%} headroom"
                ),
            )
        )
    return advice
