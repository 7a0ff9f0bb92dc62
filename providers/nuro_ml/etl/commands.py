"""``nuro-ml gen-logs``: write synthetic drive logs (MCAP) in the raw layout."""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from nuro_ml import settings
from nuro_ml.exceptions import UsageError


def parse_dates(values: list[str], *, flag: str = "--dates") -> list[date]:
    """Dates given as ``YYYY-MM-DD`` or inclusive ranges ``YYYY-MM-DD..YYYY-MM-DD``."""
    out: list[date] = []
    for value in values:
        for item in value.split(","):
            try:
                if ".." in item:
                    a, b = (date.fromisoformat(x) for x in item.split("..", 1))
                    if b < a:
                        raise UsageError(f"{flag} {item!r}: the date range ends before it starts")
                    out.extend(a + timedelta(days=i) for i in range((b - a).days + 1))
                elif item:
                    out.append(date.fromisoformat(item))
            except ValueError as err:
                raise UsageError(
                    f"{flag} {item!r}: {err}; use YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"
                ) from None
    return sorted(set(out))


def _gen_arrivals(args: argparse.Namespace) -> int:
    import redis

    from nuro_ml.etl.arrivals import Arrivals

    if not args.landing and not args.redis_url:
        raise UsageError("gen-logs --stream needs --landing, --redis-url or both")
    if args.segments < 1 and args.records < 1:
        raise UsageError("gen-logs --stream: give --segments and/or --records (how many to send)")
    arrivals = Arrivals(
        vehicles=[f"veh-{i:03d}" for i in range(1, args.vehicles + 1)],
        landing=Path(args.landing) if args.landing else None,
        segments_per_second=args.segments_per_second,
        segments=args.segments,
        segment_seconds=args.seconds if args.seconds is not None else 10.0,
        redis_client=redis.Redis.from_url(args.redis_url) if args.redis_url else None,
        stream=args.redis_stream,
        records_per_second=args.records_per_second,
        records=args.records,
        seed=args.seed,
    )
    arrivals.run()
    print(
        f"{len(arrivals.landed)} segments landed under {args.landing}, {arrivals.published} records published"
    )
    return 0


def _gen_logs(args: argparse.Namespace) -> int:
    from nuro_ml.etl.generator import generate_interval

    if args.stream:
        return _gen_arrivals(args)
    if not args.dates:
        raise UsageError("gen-logs needs --dates (or --stream for arrivals)")

    out = Path(args.out) if args.out else settings.raw_logs_dir()
    vehicles = [f"veh-{i:03d}" for i in range(1, args.vehicles + 1)]
    paths = generate_interval(
        out,
        parse_dates(args.dates),
        vehicles,
        drive_seconds=args.seconds if args.seconds is not None else 60.0,
        seed=args.seed,
        drives_per_day=args.drives_per_day,
        lidar_points=args.lidar_points,
        image_bytes=args.image_bytes,
        encoding=args.encoding,
        compression=args.compression,
        chunk_size=args.chunk_size,
        write_summary=not args.no_index,
        workers=args.workers,
        layout=args.layout,
    )
    total = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} drive logs, {total / 1e6:.1f} MB under {out}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("gen-logs", help="write deterministic synthetic drive logs (MCAP)")
    parser.add_argument("--out", help="raw logs root (default: settings.raw_logs_dir())")
    parser.add_argument("--dates", nargs="+", help="YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD")
    parser.add_argument("--vehicles", type=int, default=2, help="number of vehicles (veh-001, ...)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="length of each drive (60) or stream segment (10)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drives-per-day", type=int, default=1)
    parser.add_argument("--lidar-points", type=int, default=4096, help="points per lidar cloud")
    parser.add_argument("--image-bytes", type=int, default=16_384, help="bytes per camera frame")
    parser.add_argument(
        "--encoding",
        choices=("protobuf", "ros2", "mixed", "ros2-standard"),
        default="protobuf",
        help="ros2-standard: every topic as a standard ROS 2 type (real .msg definitions, CDR)",
    )
    parser.add_argument("--compression", choices=("zstd", "lz4", "none"), default="zstd")
    parser.add_argument("--chunk-size", type=int, default=1 << 20)
    parser.add_argument("--no-index", action="store_true", help="write files without summary/chunk index")
    parser.add_argument("--workers", type=int, default=1, help="processes writing files in parallel")
    parser.add_argument(
        "--layout",
        choices=("interleaved", "per-channel"),
        default="interleaved",
        help="chunks: one time-ordered stream for all channels (as recorders write), or one per channel",
    )
    stream = parser.add_argument_group("arrivals for the telemetry stream (--stream)")
    stream.add_argument("--stream", action="store_true", help="send segments/records at a rate instead")
    stream.add_argument("--landing", help="landing folder for segments")
    stream.add_argument("--segments", type=int, default=0, help="how many segments to land")
    stream.add_argument("--segments-per-second", type=float, default=1.0)
    stream.add_argument("--redis-url", help="redis://host:port/db of the live-record stream")
    stream.add_argument("--redis-stream", default="telemetry", help="stream key")
    stream.add_argument("--records", type=int, default=0, help="how many live records to publish")
    stream.add_argument("--records-per-second", type=float, default=1000.0)
    parser.set_defaults(func=_gen_logs)
