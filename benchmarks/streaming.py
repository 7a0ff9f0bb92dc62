"""Telemetry stream freshness and sustained rate, against the batch ETL path on the same segments.

Input layout: segments from the drive generator (``nuro_ml.etl.arrivals``): 10 s of drive each at
the generator's default topic rates and sizes (pose, GNSS, IMU, CAN, 4,096-point lidar clouds,
16 KiB camera frames; Protobuf, zstd, interleaved 1 MiB chunks), two vehicles, landed under
``date=/vehicle=/<drive>.mcap`` by rename; live records of six fields on a Redis Stream
(``XADD``, pipelined per 0.1 s tick). Redis (Debian package) and Spark ``local[2]`` run here.

* ``stream_freshness_p95``: seconds from a segment landing or a record being added to its
  feature being readable online (after the Feast push returns), p95 over every row the run
  pushed, at ``--segments-per-second`` (1) plus ``--records-per-second`` (1,000) for
  ``--seconds``. Reference: the batch ETL (:func:`nuro_ml.etl.job.run_etl`, the same decoding
  and mapping) run back to back over the landing folder while the same segments arrive at the
  same rate, each run followed by the same Feast push of the latest row per vehicle; a
  segment's freshness is the end of the first run that includes it minus its landing time.
  The batch path has no live records, so the reference covers segments only; the
  ``stream_freshness_p95_segments`` line compares like for like.
* ``stream_sustained_rate``: the highest of ``--rates`` (segments/s, with the records) at which
  the stream's p95 segment freshness stays under 10 s and its backlog (landed minus decoded
  segments) does not grow between the middle and the end of a ``--window`` (300 s by
  default). Reference: the batch ETL's throughput on the same segments (segments/s of one run
  over all of them), the rate it could keep up with ignoring freshness.

Prints::

    stream_freshness_p95: ours X s, reference Y s, ratio Z
    stream_freshness_p95_segments: ours X s, reference Y s, ratio Z
    stream_sustained_rate: ours X segments/s, reference Y segments/s, ratio Z

Run: ``python -m benchmarks.streaming [--seconds 60] [--window 300] [--rates 1,2,4]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

VEHICLES = ["veh-001", "veh-002"]
TARGET_SECONDS = 10.0


@dataclass
class Env:
    root: Path
    redis_url: str
    repo: Path
    client: Any


def _p95(values: list[float] | np.ndarray) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), 95)) if len(values) else float("nan")


def _stream_run(
    spark: Any, env: Env, name: str, seg_rate: float, rec_rate: float, seconds: float
) -> dict[str, Any]:
    """Run the stream while arrivals come for ``seconds``; freshness samples and backlog."""
    from nuro_ml.etl.arrivals import Arrivals
    from nuro_ml.etl.stream_sources.mcap_landing import Manifest
    from nuro_ml.stream.job import StreamJob, StreamJobConfig

    root = env.root / name
    stream = f"telemetry-{name}"
    cfg = StreamJobConfig(
        output_path=str(root / "out"),
        checkpoint_path=str(root / "checkpoint"),
        state_dir=str(root / "state"),
        landing_path=str(root / "landing"),
        redis_url=env.redis_url,
        redis_stream=stream,
        feature_repo=str(env.repo),
        trigger_seconds=1.0,
    )
    job = StreamJob(spark, cfg, pid=os.getpid())
    job.start()
    arrivals = Arrivals(
        vehicles=VEHICLES,
        landing=root / "landing",
        segments=max(1, int(seg_rate * seconds)),
        segments_per_second=seg_rate,
        redis_client=env.client,
        stream=stream,
        records=int(rec_rate * seconds),
        records_per_second=rec_rate,
    )
    sender = threading.Thread(target=arrivals.run)
    manifest = Path(cfg.checkpoint("segments_vehicle_can")) / "landing-manifest.jsonl"

    def backlog() -> int:
        decoded = job.recorder.record.queries.get("segments_vehicle_can")
        landed = len(list((root / "landing").rglob("*.mcap")))
        listed = len(Manifest(manifest).entries) if manifest.exists() else 0
        return landed - (listed if decoded is not None and decoded.batch_id >= 0 else 0)

    started = time.monotonic()
    sender.start()
    time.sleep(seconds / 2)
    mid = backlog()
    sender.join()
    end = backlog()
    # Drain: wait until every landed segment and record is online (bounded).
    deadline = time.monotonic() + max(120.0, seconds)
    while time.monotonic() < deadline:
        seg = len(job.recorder.by_origin["segment"])
        if backlog() == 0 and seg > 0 and len(job.recorder.by_origin["record"]) >= arrivals.published:
            break
        time.sleep(1.0)
    job.stop()
    return {
        "elapsed": time.monotonic() - started,
        "all": list(job.recorder.samples),
        "segment": list(job.recorder.by_origin["segment"]),
        "record": list(job.recorder.by_origin["record"]),
        "backlog_mid": mid,
        "backlog_end": end,
        "segments": len(arrivals.landed),
    }


def _batch_reference(spark: Any, env: Env, seg_rate: float, seconds: float) -> dict[str, Any]:
    """Back-to-back batch ETL runs over the landing folder while segments arrive; push after each."""
    import pyarrow.dataset as ds
    from feast import FeatureStore
    from feast.data_source import PushMode
    from nuro_ml.etl.arrivals import Arrivals, segment_spec
    from nuro_ml.etl.job import ETLJobConfig, run_etl
    from nuro_ml.stream.job import PUSH_SOURCE, latest_per_vehicle

    root = env.root / "batch"
    landing, out = root / "landing", root / "out"
    count = max(1, int(seg_rate * seconds))
    last_day = segment_spec(VEHICLES[0], count).day
    arrivals = Arrivals(
        vehicles=VEHICLES, landing=landing, segments=count, segments_per_second=seg_rate, redis_client=None
    )
    sender = threading.Thread(target=arrivals.run)
    store = FeatureStore(repo_path=str(env.repo))
    seen: dict[str, float] = {}
    freshness: list[float] = []
    runs = 0
    sender.start()
    while sender.is_alive() or len(seen) < len(arrivals.landed):
        landed = {str(p): p.stat().st_mtime for p in landing.rglob("*.mcap")} if landing.exists() else {}
        new = {p: t for p, t in landed.items() if p not in seen}
        if not new:
            time.sleep(0.2)
            continue
        cfg = ETLJobConfig(
            input_path=str(landing),
            output_path=str(out),
            start="2026-01-05",
            end=(last_day + timedelta(days=1)).isoformat(),
            quarantine_path=str(root / "quarantine"),
            run_key=f"bench-{runs}",
        )
        run_etl(spark, cfg, progress=lambda _msg: None)
        can = ds.dataset(out / "vehicle_can", format="parquet", partitioning="hive").to_table(
            columns=["log_time", "speed_mps", "brake_pressure_bar", "steering_angle_rad", "vehicle"]
        )
        frame = can.rename_columns(
            ["event_timestamp", "speed_mps", "brake_pressure_bar", "steering_angle_rad", "vehicle_id"]
        ).to_pandas()
        store.push(PUSH_SOURCE, latest_per_vehicle(frame), to=PushMode.ONLINE)
        readable = time.time()
        freshness.extend(readable - t for t in new.values())
        seen.update(new)
        runs += 1
    sender.join()
    return {"segment": freshness, "runs": runs}


def _batch_throughput(spark: Any, env: Env, count: int) -> float:
    """Segments/s of one batch ETL run over ``count`` landed segments."""
    from nuro_ml.etl.arrivals import land_segment, segment_spec
    from nuro_ml.etl.job import ETLJobConfig, run_etl

    root = env.root / "throughput"
    for i in range(count):
        land_segment(root / "landing", segment_spec(VEHICLES[i % 2], i // 2))
    last_day = segment_spec(VEHICLES[0], count).day
    cfg = ETLJobConfig(
        input_path=str(root / "landing"),
        output_path=str(root / "out"),
        start="2026-01-05",
        end=(last_day + timedelta(days=1)).isoformat(),
        quarantine_path=str(root / "quarantine"),
        run_key="throughput",
    )
    started = time.perf_counter()
    run_etl(spark, cfg, progress=lambda _msg: None)
    return count / (time.perf_counter() - started)


def _line(name: str, ours: float, ref: float, unit: str, better_low: bool) -> str:
    ratio = (ref / ours if better_low else ours / ref) if ours and ref else float("nan")
    return f"{name}: ours {ours:.2f} {unit}, reference {ref:.2f} {unit}, ratio {ratio:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.streaming", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="arrival time of the freshness runs")
    parser.add_argument("--segments-per-second", type=float, default=1.0)
    parser.add_argument("--records-per-second", type=float, default=1000.0)
    parser.add_argument("--window", type=float, default=300.0, help="arrival time of each sustained-rate run")
    parser.add_argument("--rates", default="1,2,4", help="segment rates tried for the sustained rate")
    parser.add_argument("--skip-sustained", action="store_true")
    args = parser.parse_args(argv)

    import redis
    from nuro_ml.etl.spark_session import build_session
    from nuro_ml.features.stream_views import write_repo
    from nuro_ml.local_cluster import redis as rd
    from nuro_ml.local_cluster.processes import free_port

    root = Path(tempfile.mkdtemp(prefix="nuro-bench-stream-"))
    os.environ["NURO_ML_DATA_DIR"] = str(root / "data")
    (root / "redis").mkdir(parents=True)
    server = rd.start(root / "redis", free_port(), env=os.environ)
    spark = None
    try:
        client = redis.Redis(host=server.host, port=server.port)
        repo = write_repo(
            root / "repo", project="bench_stream", redis_connection_string=server.connection_string
        )
        env = Env(root=root, redis_url=f"redis://{server.host}:{server.port}/0", repo=repo, client=client)
        spark = build_session("local[2]", app_name="bench-streaming", long_lived=True)
        print(f"[{datetime.now(tz=UTC):%H:%M:%S}] stream run: {args.seconds:.0f} s", file=sys.stderr)
        ours = _stream_run(
            spark, env, "fresh", args.segments_per_second, args.records_per_second, args.seconds
        )
        print(f"[{datetime.now(tz=UTC):%H:%M:%S}] batch reference run", file=sys.stderr)
        ref = _batch_reference(spark, env, args.segments_per_second, args.seconds)
        print(
            f"  {ours['segments']} segments, {len(ours['record'])} records pushed; batch: {ref['runs']} runs",
            file=sys.stderr,
        )
        print(_line("stream_freshness_p95", _p95(ours["all"]), _p95(ref["segment"]), "s", True))
        print(_line("stream_freshness_p95_segments", _p95(ours["segment"]), _p95(ref["segment"]), "s", True))
        if not args.skip_sustained:
            best = 0.0
            for rate in (float(r) for r in args.rates.split(",")):
                run = _stream_run(spark, env, f"rate-{rate:g}", rate, args.records_per_second, args.window)
                p95 = _p95(run["segment"])
                grows = run["backlog_end"] > run["backlog_mid"] + 1
                print(
                    f"  {rate:g} segments/s: p95 {p95:.2f} s, "
                    f"backlog {run['backlog_mid']} -> {run['backlog_end']}",
                    file=sys.stderr,
                )
                if p95 < TARGET_SECONDS and not grows:
                    best = rate
                else:
                    break
            reference = _batch_throughput(spark, env, max(8, int(best * 8) or 8))
            print(_line("stream_sustained_rate", best, reference, "segments/s", False))
    finally:
        if spark is not None:
            spark.stop()
        rd.stop(server, grace=5)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
