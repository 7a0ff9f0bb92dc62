"""``nuro-ml quota`` (pools, team quotas, leases, usage) and ``nuro-ml sim`` (trace replay).

Imports of the ledger, Airflow and matplotlib happen inside the handlers, so ``nuro-ml --help``
stays fast.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nuro_ml.cli_support import non_negative_float, non_negative_int, positive_float, positive_int
from nuro_ml.exceptions import CapacityError, UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``quota`` and ``sim`` sub-commands."""
    _register_quota(subparsers)
    _register_sim(subparsers)


# -- quota ---------------------------------------------------------------------------------


def _register_quota(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "quota",
        help="show and set GPU pools, team quotas and leases",
        description="GPU quota ledger: pools (capacity per GPU type), team quotas (nominal, borrowing and "
        "lending limits), leases and the queue of waiting requests.",
    )
    parser.add_argument(
        "--ledger-url", default=None, help="ledger database URL (default: NURO_ML_LEDGER_URL or the data dir)"
    )
    actions = parser.add_subparsers(dest="quota_command", required=True, metavar="ACTION")

    show = actions.add_parser(
        "show",
        help="pools, quotas, active leases, waiting requests, wait times",
        description="What the capacity page shows: pools and quotas with the GPUs leases hold now, "
        "the queue in the order the admission policy admits it (per pool), and the queue wait of "
        "requests admitted in the window. The JSON is the page API's /api/capacity document.",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of tables")
    show.add_argument(
        "--hours", type=positive_float, default=24.0, help="window of wait times and costs (default 24)"
    )
    show.add_argument(
        "--policy",
        default="fair",
        help="admission policy whose queue order to show (default fair; or fifo, ...)",
    )
    show.set_defaults(func=_quota_show)

    set_pool = actions.add_parser("set-pool", help="register a pool or change its capacity")
    set_pool.add_argument("name")
    set_pool.add_argument("--gpus", type=non_negative_int, required=True, help="GPUs in the pool")
    set_pool.add_argument("--gpu-type", default=None, help="GPU model, e.g. A100")
    set_pool.set_defaults(func=_quota_set_pool)

    set_nodes = actions.add_parser(
        "set-nodes",
        help="declare a pool's nodes from a node list (sn,cpu_milli,memory_mib,gpu,model)",
        description="Replace the nodes of a registered pool with those of an openb-style node list "
        "CSV; the pool's capacity becomes their GPUs, and requests are admitted only where they can "
        "be placed on them.",
    )
    set_nodes.add_argument("pool")
    set_nodes.add_argument("node_list", type=Path)
    set_nodes.set_defaults(func=_quota_set_nodes)

    set_quota = actions.add_parser("set-quota", help="set a team's quota in a pool")
    set_quota.add_argument("team")
    set_quota.add_argument("--pool", required=True)
    set_quota.add_argument(
        "--nominal",
        type=_gpu_amount_arg,
        required=True,
        help="GPUs the team owns in the pool: whole (4), fractional (2.5) or milli-GPUs (2500m)",
    )
    set_quota.add_argument(
        "--borrowing-limit", type=_gpu_amount_arg, default=None, help="most GPUs it may borrow"
    )
    set_quota.add_argument(
        "--lending-limit", type=_gpu_amount_arg, default=None, help="most idle GPUs it lends out"
    )
    set_quota.set_defaults(func=_quota_set_quota)

    remove = actions.add_parser("remove-quota", help="delete a team's quota in a pool")
    remove.add_argument("team")
    remove.add_argument("--pool", required=True)
    remove.set_defaults(func=_quota_remove)

    leases = actions.add_parser("leases", help="list leases")
    leases.add_argument("--state", choices=["active", "released", "expired"], default=None)
    leases.add_argument("--pool", default=None)
    leases.set_defaults(func=_quota_leases)

    release = actions.add_parser("release", help="release a lease (idempotent)")
    release.add_argument("lease_id")
    release.set_defaults(func=_quota_release)

    usage = actions.add_parser("usage", help="GPU-hours per team, idle GPU-hours, cost, scale-down advice")
    usage.add_argument("--hours", type=positive_float, default=24.0, help="look-back window (default 24)")
    usage.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="POOL=INSTANCE_TYPE[:spot]",
        help="how a pool is paid for, e.g. a100=p4d.24xlarge or a10g=g5.12xlarge:spot",
    )
    usage.add_argument("--live-prices", action="store_true", help="read prices from the AWS Pricing API")
    usage.set_defaults(func=_quota_usage)

    for action_parser in actions.choices.values():
        action_parser.set_defaults(func=_ledger_errors(action_parser.get_default("func")))


_Handler = Callable[[argparse.Namespace], int]
_CREDENTIALS = re.compile(r"(://[^:/@]*:)[^@]*@")


def _ledger_errors(handler: _Handler) -> _Handler:
    """Database errors of a ``quota`` action, worded as what to fix: the URL, or the database."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from sqlalchemy.exc import ArgumentError, DBAPIError

        try:
            return handler(args)
        except ArgumentError as err:
            url = _CREDENTIALS.sub(r"\1***@", str(args.ledger_url))
            raise UsageError(
                f"--ledger-url {url!r} is not a usable database URL ({err}); use e.g. "
                "sqlite:////path/to/ledger.db or postgresql+psycopg://user@host/dbname"
            ) from err
        except (DBAPIError, CapacityError) as err:
            # The ledger wraps database errors in CapacityError; its own refusals stay as they are.
            cause = err if isinstance(err, DBAPIError) else err.__cause__
            if not isinstance(cause, DBAPIError):
                raise
            from nuro_ml.capacity.ledger import QuotaLedger

            reason = str(cause.orig).strip().splitlines()[0] if cause.orig is not None else str(cause)
            raise CapacityError(
                f"cannot use the quota ledger {QuotaLedger(args.ledger_url).safe_url}: {reason}; check that "
                "the database is up and that --ledger-url (or NURO_ML_LEDGER_URL) points at it"
            ) from err

    return run


def _ledger(args: argparse.Namespace) -> Any:
    from nuro_ml.capacity.ledger import QuotaLedger

    return QuotaLedger(args.ledger_url)


def _reason_cell(reason: str | None, gpus_ahead: int | None) -> str:
    """The reason code, with the GPUs queued ahead when there are any ("-" before a round)."""
    if reason is None:
        return "-"
    if gpus_ahead:
        return f"{reason} ({gpus_ahead} GPUs ahead)"
    return reason


def _table(rows: list[list[str]]) -> str:
    if len(rows) <= 1:
        return "  (none)"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True))]
    lines.append("  " + "  ".join("-" * w for w in widths))
    lines.extend("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows[1:])
    return "\n".join(lines)


def _gpu_amount_arg(value: str) -> int | float:
    from nuro_ml.capacity.records import gpu_quantity

    try:
        return gpu_quantity(value, what="GPU amount")
    except CapacityError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_gpu_amount_arg.__name__ = "GPU amount"


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _quota_show(args: argparse.Namespace) -> int:
    from nuro_ml.capacity.policy import get_policy
    from nuro_ml.capacity.view import capacity_overview

    try:
        policy = get_policy(args.policy)
    except CapacityError as err:
        raise UsageError(f"--policy: {err}") from None
    ledger = _ledger(args)
    view = capacity_overview(ledger, hours=args.hours, buckets=1, policy=policy)
    if args.json:
        print(json.dumps({"ledger": ledger.safe_url, **view.model_dump(mode="json")}, indent=2))
        return 0

    print(f"Ledger {ledger.safe_url}")
    print("\nPools")
    print(
        _table(
            [["pool", "gpu type", "capacity", "used", "free", "waiting"]]
            + [
                [p.name, _fmt(p.gpu_type), str(p.capacity), str(p.used), str(p.free), str(p.waiting_requests)]
                for p in view.pools
            ]
        )
    )
    print("\nTeam quotas")
    print(
        _table(
            [["team", "pool", "nominal", "borrowing limit", "lending limit", "limit", "used", "borrowed"]]
            + [
                [
                    q.team,
                    q.pool,
                    str(q.nominal),
                    _fmt(q.borrowing_limit),
                    _fmt(q.lending_limit),
                    str(q.limit),
                    str(q.used),
                    str(q.borrowed),
                ]
                for q in view.quotas
            ]
        )
    )
    print("\nActive leases")
    print(
        _table(
            [["lease", "team", "pool", "gpus", "acquired", "expires", "task instance"]]
            + [
                [
                    lease.lease_id,
                    lease.team,
                    lease.pool,
                    str(lease.gpus),
                    _fmt(lease.acquired_at),
                    _fmt(lease.expires_at),
                    lease.key,
                ]
                for lease in view.leases
            ]
        )
    )
    print(f"\nWaiting requests (in {view.policy} policy order)")
    print(
        _table(
            [["task instance", "pool", "#", "team", "gpus", "priority", "waiting (s)", "reason", "why"]]
            + [
                [
                    entry.key,
                    entry.pool,
                    str(entry.position),
                    entry.team,
                    str(entry.gpus),
                    str(entry.priority),
                    f"{entry.wait_seconds:.0f}",
                    _reason_cell(entry.reason, entry.gpus_ahead),
                    entry.reason_message or "",
                ]
                for entry in view.queue
            ]
        )
    )
    waits = view.waits
    print(f"\nQueue wait of requests admitted in the last {view.window_hours:g} h (s)")
    print(
        _table(
            [["team", "admitted", "p50", "p95", "max"]]
            + [
                [t.team, str(t.admitted), _fmt(t.p50_seconds), _fmt(t.p95_seconds), _fmt(t.max_seconds)]
                for t in waits.teams
            ]
            + (
                [["all", str(waits.admitted), _fmt(waits.p50_seconds), _fmt(waits.p95_seconds), ""]]
                if waits.teams
                else []
            )
        )
    )
    return 0


def _quota_set_pool(args: argparse.Namespace) -> int:
    pool = _ledger(args).upsert_pool(args.name, capacity=args.gpus, gpu_type=args.gpu_type)
    print(f"pool {pool.name}: {pool.capacity} GPUs ({pool.gpu_type or 'any type'})")
    return 0


def _quota_set_nodes(args: argparse.Namespace) -> int:
    from nuro_ml.capacity.sim.openb import load_node_list

    nodes = load_node_list(args.node_list)
    pool = _ledger(args).set_nodes(args.pool, nodes)
    models = sorted({n.gpu_model or "no GPU model" for n in nodes})
    print(f"pool {pool.name}: {len(nodes)} nodes, {pool.capacity} GPUs ({', '.join(models)})")
    return 0


def _quota_set_quota(args: argparse.Namespace) -> int:
    quota = _ledger(args).upsert_quota(
        args.team,
        args.pool,
        nominal=args.nominal,
        borrowing_limit=args.borrowing_limit,
        lending_limit=args.lending_limit,
    )
    print(
        f"quota {quota.team} in {quota.pool}: nominal {quota.nominal}, borrowing limit "
        f"{_fmt(quota.borrowing_limit)}, lending limit {_fmt(quota.lending_limit)}"
    )
    return 0


def _quota_remove(args: argparse.Namespace) -> int:
    if _ledger(args).remove_quota(args.team, args.pool):
        print(f"removed quota of {args.team} in {args.pool}")
        return 0
    raise CapacityError(
        f"team {args.team!r} has no quota in pool {args.pool!r}; `nuro-ml quota show` lists the quotas"
    )


def _quota_leases(args: argparse.Namespace) -> int:
    from nuro_ml.capacity.records import LeaseState

    ledger = _ledger(args)
    now = ledger.now()
    leases = ledger.leases(state=LeaseState(args.state) if args.state else None, pool=args.pool)
    print(
        _table(
            [["lease", "state", "team", "pool", "gpus", "acquired", "ended", "gpu-hours", "task instance"]]
            + [
                [
                    lease.lease_id,
                    lease.state.value,
                    lease.team,
                    lease.pool,
                    str(lease.gpus),
                    _fmt(lease.acquired_at),
                    _fmt(
                        lease.released_at or (lease.expires_at if lease.state is LeaseState.EXPIRED else None)
                    ),
                    f"{lease.gpu_hours(now):.3f}",
                    lease.key,
                ]
                for lease in leases
            ]
        )
    )
    return 0


def _quota_release(args: argparse.Namespace) -> int:
    lease = _ledger(args).release(args.lease_id)
    if lease is None:
        raise CapacityError(
            f"lease {args.lease_id!r} is not in the ledger; `nuro-ml quota leases` lists the lease ids"
        )
    print(f"lease {lease.lease_id}: {lease.state.value}")
    return 0


def _pricing(specs: list[str]) -> dict[str, Any]:
    from nuro_ml.capacity.cost import PoolPricing

    pricing: dict[str, Any] = {}
    for spec in specs:
        pool, sep, rest = spec.partition("=")
        instance_type, _, market = rest.partition(":")
        if not sep or not pool or not instance_type or market not in ("", "spot", "on-demand"):
            raise UsageError(f"--price {spec!r}: expected POOL=INSTANCE_TYPE or POOL=INSTANCE_TYPE:spot")
        pricing[pool] = PoolPricing(instance_type, "spot" if market == "spot" else "on-demand")
    return pricing


def _quota_usage(args: argparse.Namespace) -> int:
    from nuro_ml.capacity.cost import (
        PriceCatalog,
        gpu_hours_by_team,
        idle_by_pool,
        scale_down_recommendations,
    )

    ledger = _ledger(args)
    end = ledger.now()
    start = end - timedelta(hours=args.hours)
    pricing = _pricing(args.price)
    catalog = None
    if pricing:
        types = sorted({p.instance_type for p in pricing.values()})
        catalog = PriceCatalog.from_aws(types) if args.live_prices else PriceCatalog.bundled()
    leases = ledger.leases()
    print(f"GPU usage in the last {args.hours:g} h (ledger {ledger.safe_url})")
    lines = gpu_hours_by_team(leases, start, end, catalog=catalog, pricing=pricing)
    print(
        _table(
            [["team", "pool", "gpu-hours", "cost (USD)"]]
            + [
                [
                    line.team,
                    line.pool,
                    f"{line.gpu_hours:.3f}",
                    "-" if line.cost is None else f"{line.cost:.2f}",
                ]
                for line in lines
            ]
        )
    )
    idle = idle_by_pool(ledger.pools(), leases, start, end)
    print("\nIdle capacity")
    print(
        _table(
            [["pool", "capacity", "used gpu-hours", "idle gpu-hours", "utilization", "peak gpus"]]
            + [
                [
                    p.pool,
                    str(p.capacity),
                    f"{p.used_gpu_hours:.3f}",
                    f"{p.idle_gpu_hours:.3f}",
                    f"{p.utilization:.1%}",
                    str(p.peak_gpus),
                ]
                for p in idle
            ]
        )
    )
    advice = scale_down_recommendations(idle, catalog=catalog, pricing=pricing)
    print("\nScale-down recommendations")
    print(
        _table(
            [["pool", "capacity", "recommended", "saving / month (USD)", "why"]]
            + [
                [a.pool, str(a.capacity), str(a.recommended_capacity), _fmt(a.monthly_saving), a.reason]
                for a in advice
            ]
        )
    )
    return 0


# -- sim -----------------------------------------------------------------------------------


def _register_sim(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="replay a cluster trace through the admission policies",
        description="Replay a job trace (Alibaba GPU cluster trace 2023 pod list, a jobs CSV, or a synthetic "
        "multi-team trace) through the same admission policy code the GPU-capacity sensor runs, and compare "
        "policies: utilization, queue wait p50/p95/max per team, JCT and fairness, as a table and PNG plots.",
    )
    parser.add_argument("trace", nargs="?", type=Path, help="trace CSV (omit with --synthetic)")
    parser.add_argument("--format", choices=["auto", "alibaba", "jobs"], default="auto")
    parser.add_argument("--synthetic", action="store_true", help="generate a synthetic multi-team trace")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic trace")
    parser.add_argument("--hours", type=positive_float, default=168.0, help="length of the synthetic trace")
    parser.add_argument("--limit", type=positive_int, default=None, help="replay only the first N jobs")
    parser.add_argument("--gpus", type=positive_int, default=None, help="capacity of the single pool 'gpu'")
    parser.add_argument(
        "--pool", action="append", default=[], metavar="NAME=GPUS", help="pool capacity (repeatable)"
    )
    parser.add_argument(
        "--quota",
        action="append",
        default=[],
        metavar="TEAM=GPUS[@POOL]",
        help="a team's nominal quota: whole GPUs (4), fractional (2.5) or milli-GPUs (2500m); fractions "
        "need a cluster counted in milli-GPUs (--nodes) (repeatable; default: capacity split evenly)",
    )
    parser.add_argument("--policies", default="fifo,fair", help="comma-separated policies to compare")
    parser.add_argument(
        "--reclaim-grace",
        type=non_negative_float,
        default=300.0,
        help="seconds before a reclaimed lease ends",
    )
    parser.add_argument(
        "--nodes",
        type=Path,
        default=None,
        metavar="NODE_LIST",
        help="cluster node list (openb_node_list_gpu_node.csv format: sn,cpu_milli,memory_mib,gpu,model); "
        "gives the cluster size and, with --protocol fgd, its nodes",
    )
    parser.add_argument(
        "--protocol",
        choices=["timed", "fgd"],
        default="timed",
        help="timed: replay pods at their (scaled) times through the admission policies; fgd: the FGD "
        "paper's protocol, pods in random order until the arrived GPU demand reaches --target of "
        "capacity, placed on nodes by each --placement policy",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="timed replay: divide the trace's inter-arrival times by this factor to load the cluster "
        "(run times unchanged); the report states it",
    )
    parser.add_argument(
        "--placement",
        default="first-fit,best-fit,fgd,ours",
        help="fgd protocol: comma-separated placement policies to compare",
    )
    parser.add_argument("--seeds", type=int, default=10, help="fgd protocol: seeds 0..N-1 (arrival orders)")
    parser.add_argument(
        "--target",
        type=float,
        default=1.0,
        help="fgd protocol: arrived GPU demand to stop at, share of capacity",
    )
    parser.add_argument(
        "--order",
        choices=["random", "submission"],
        default="random",
        help="fgd protocol: arrival order (submission: the trace's creation order, then random draws)",
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for plots and summary.json")
    parser.add_argument("--no-plots", action="store_true")
    parser.set_defaults(func=_sim)


def _split_spec(spec: str) -> tuple[str, str, str | None] | None:
    """``NAME=VALUE[@POOL]`` as (name, value, pool); None when the name or the value is missing."""
    name, sep, rest = spec.partition("=")
    value, _, pool = rest.partition("@")
    return (name, value, pool or None) if sep and name and value else None


def _pairs(specs: list[str], flag: str) -> list[tuple[str, int, str | None]]:
    out = []
    for spec in specs:
        parts = _split_spec(spec)
        if parts is None or not parts[1].isdigit():
            raise UsageError(f"{flag} {spec!r}: expected NAME=INTEGER")
        out.append((parts[0], int(parts[1]), parts[2]))
    return out


def _quota_specs(specs: list[str]) -> list[tuple[str, int, str | None]]:
    """``TEAM=GPUS[@POOL]`` flags as (team, milli-GPUs, pool).

    Amounts read as ``quota set-quota --nominal`` reads them: 4, 2.5 or 2500m.
    """
    from nuro_ml.capacity.records import gpu_quantity, milli_of

    out = []
    for spec in specs:
        parts = _split_spec(spec)
        if parts is None:
            raise UsageError(
                f"--quota {spec!r}: expected TEAM=GPUS[@POOL], e.g. perception=4 or perception=2500m"
            )
        team, value, pool = parts
        try:
            milli = milli_of(gpu_quantity(value, what=f"--quota {spec!r}"))
        except CapacityError as err:
            raise UsageError(str(err)) from None
        out.append((team, milli, pool))
    return out


def _sim(args: argparse.Namespace) -> int:
    if args.protocol == "fgd":
        return _sim_fgd(args)
    return _sim_timed(args)


def _sim_fgd(args: argparse.Namespace) -> int:
    from nuro_ml import settings
    from nuro_ml.capacity.placement import PLACEMENT_POLICIES
    from nuro_ml.capacity.sim.openb import cluster_milli, load_node_list, load_pods
    from nuro_ml.capacity.sim.protocol import format_protocol, plot_protocol, run_seeds

    if args.trace is None or args.nodes is None:
        raise UsageError("--protocol fgd needs a pod list TRACE and --nodes NODE_LIST")
    policies = [p.strip() for p in args.placement.split(",") if p.strip()]
    unknown = [p for p in policies if p not in PLACEMENT_POLICIES]
    if not policies or unknown:
        raise UsageError(
            f"--placement {args.placement!r}: unknown {unknown}; choose from {list(PLACEMENT_POLICIES)}"
        )
    if args.seeds <= 0:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    nodes = load_node_list(args.nodes)
    pods = load_pods(args.trace)
    stats, _runs = run_seeds(
        nodes, pods, policies, seeds=range(args.seeds), target=args.target, order=args.order
    )
    print(
        f"FGD protocol: {len(pods)} pods of {args.trace.name} on {len(nodes)} nodes "
        f"({cluster_milli(nodes) / 1000:g} GPUs) of {args.nodes.name}; {args.order} arrival order until "
        f"{args.target:.0%} of GPU capacity arrived; {args.seeds} seed(s), mean ± std"
    )
    print(format_protocol(stats))
    out = Path(args.out or settings.data_dir() / "sim" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "fgd_summary.json"
    summary.write_text(json.dumps([s.__dict__ for s in stats], indent=2, default=list))
    if not args.no_plots:
        for path in plot_protocol(stats, str(out), title=f"{args.trace.name} on {args.nodes.name}"):
            print(f"wrote {path}")
    print(f"wrote {summary}")
    return 0


def _sim_timed(args: argparse.Namespace) -> int:
    from nuro_ml import settings
    from nuro_ml.capacity.policy import gpu_amount
    from nuro_ml.capacity.records import Quota
    from nuro_ml.capacity.sim.engine import simulate
    from nuro_ml.capacity.sim.report import format_table, plot, summarize, write_json
    from nuro_ml.capacity.sim.trace import load_alibaba, load_jobs_csv, scale_time, synthetic_trace

    if not args.time_scale > 0:
        raise UsageError(f"--time-scale must be > 0, got {args.time_scale}")
    # Against a node list the cluster is counted in milli-GPUs, so GPU-sharing pods take their
    # share instead of a whole GPU.
    milli = args.nodes is not None
    if args.synthetic:
        trace = synthetic_trace(seed=args.seed, hours=args.hours)
    elif args.trace is None:
        raise UsageError("give a trace CSV or --synthetic")
    else:
        if not args.trace.exists():
            raise CapacityError(f"trace {args.trace} does not exist")
        kind = args.format
        if kind == "auto":
            header = args.trace.open().readline()
            kind = "alibaba" if "num_gpu" in header and "creation_time" in header else "jobs"
        if kind == "alibaba":
            trace = load_alibaba(args.trace, limit=args.limit, milli=milli)
        else:
            trace = load_jobs_csv(args.trace, milli=milli)
    if args.limit is not None and trace.jobs[args.limit :]:
        from nuro_ml.capacity.sim.trace import Trace

        trace = Trace(trace.jobs[: args.limit], trace.source, trace.skipped)
    if not trace.jobs:
        raise CapacityError(f"trace {trace.source} has no GPU jobs to replay")

    if args.time_scale != 1.0:
        trace = scale_time(trace, args.time_scale)
    capacity = {name: gpus for name, gpus, _ in _pairs(args.pool, "--pool")}
    if args.gpus is not None:
        capacity["gpu"] = args.gpus
    if args.nodes is not None:
        from nuro_ml.capacity.sim.openb import cluster_milli, load_node_list

        if capacity:
            raise UsageError("give the cluster either as --nodes or as --gpus/--pool, not both")
        capacity = {"gpu": cluster_milli(load_node_list(args.nodes))}
    if not capacity:
        if trace.source.startswith("synthetic"):
            capacity = {"gpu": 32}
        else:
            raise UsageError(
                "give the cluster with --nodes NODE_LIST (openb node list), --gpus N or --pool NAME=N"
            )
    default_pool = next(iter(capacity)) if len(capacity) == 1 else None
    quotas = None
    if args.quota:
        quotas = []
        for (team, quota_milli, pool), spec in zip(_quota_specs(args.quota), args.quota, strict=True):
            target = pool or default_pool
            if target is None:
                raise UsageError(f"--quota {spec!r}: name the pool (TEAM=GPUS@POOL) when there are several")
            if not milli and quota_milli % 1000:
                raise UsageError(
                    f"--quota {spec!r}: a fraction of a GPU needs the cluster counted in milli-GPUs; "
                    "give it as --nodes NODE_LIST, or quote whole GPUs"
                )
            quotas.append(
                Quota(team=team, pool=target, nominal=quota_milli if milli else quota_milli // 1000)
            )

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not policies:
        raise UsageError(f"--policies {args.policies!r}: name at least one policy, e.g. fifo,fair")
    results = []
    for name in policies:
        results.append(
            simulate(trace, capacity, quotas=quotas, policy=name, reclaim_grace=args.reclaim_grace)
        )
    summaries = [summarize(r) for r in results]
    unit = "milli-GPUs" if milli else "GPUs"
    print(
        f"trace {trace.source}: {len(trace.jobs)} jobs ({trace.skipped} skipped), "
        f"teams {', '.join(trace.teams)}, capacity {capacity} {unit}, time scale {args.time_scale:g}x"
    )
    if quotas:
        per_gpu = 1000 if milli else 1
        listed = (f"{q.team}@{q.pool} {gpu_amount(q.nominal, per_gpu)} GPUs" for q in quotas)
        print("quotas: " + ", ".join(listed))
    print(format_table(summaries))
    out = args.out or settings.data_dir() / "sim" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    write_json(summaries, Path(out) / "summary.json")
    if not args.no_plots:
        for path in plot(results, summaries, out):
            print(f"wrote {path}")
    print(f"wrote {Path(out) / 'summary.json'}")
    return 0
