"""Sensor-log ETL: decode throughput per core, scaling to 2 cores, and memory of the whole job.

One run generates one input (protobuf-encoded synthetic drives, all six topics) and measures:

* ``etl_decode_per_core``: messages/s decoded to typed Arrow columns by our reader
  (:class:`nuro_ml.etl.reader.McapTableReader`, every topic, every column) in one process, against
  the upstream loop ``mcap.reader.make_reader(..., decoder_factories=[mcap_protobuf
  DecoderFactory()]).iter_decoded_messages()`` over the same files. Median of ``--repeat`` runs.
* ``etl_scaling``: our decode with the files split over 1 and over 2 worker processes (median of
  ``--repeat`` runs each).
* ``etl_memory``: peak RSS of this process and all its children (Spark JVM, Python workers)
  while the full ETL job (local[2]) turns the input into Parquet.

Prints::

    etl_decode_per_core: ours X msg/s, reference Y msg/s, ratio Z
    etl_scaling: 1 core X msg/s, 2 cores Y msg/s, efficiency Z
    etl_memory: input G GB, peak RSS M MB

Run: ``python -m benchmarks.etl [--gb G] [--repeat R]``; the default input is ~0.15 GB, use
``--gb 5`` for the large-input memory run.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path

#: Bytes per drive-second with the benchmark's sensor sizes (lidar 4096 points, 16 KiB images).
_BYTES_PER_SECOND = 0.83e6


METRICS = ("decode", "scaling", "memory")


def _generate(root: Path, gb: float) -> list[str]:
    from nuro_ml.etl.generator import generate_interval

    drive_seconds = 60.0
    drives = max(4, math.ceil(gb * 1e9 / (_BYTES_PER_SECOND * drive_seconds)))
    vehicles = [f"veh-{i:03d}" for i in range(1, 5)]
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(math.ceil(drives / len(vehicles)))]
    paths = generate_interval(root, days, vehicles, drive_seconds=drive_seconds, seed=42, workers=2)
    return [str(p) for p in paths]


def decode_ours(paths: list[str]) -> int:
    """Decode every topic of ``paths`` into Arrow tables; returns the message count."""
    from nuro_ml.etl import schemas
    from nuro_ml.etl.reader import McapTableReader, infer_schema, plan

    total = 0
    for topic in schemas.TOPICS:
        schema = infer_schema(paths[:1], {topic})
        reader = McapTableReader({topic}, schema)
        for part in plan(paths, {topic}):
            for batch in reader.read(part):
                total += batch.num_rows
    return total


def decode_reference(paths: list[str]) -> int:
    from mcap.reader import make_reader
    from mcap_protobuf.decoder import DecoderFactory

    total = 0
    for path in paths:
        with open(path, "rb") as fh:
            reader = make_reader(fh, decoder_factories=[DecoderFactory()])
            for _ in reader.iter_decoded_messages():
                total += 1
    return total


def _timed(fn: object, paths: list[str]) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn(paths)  # type: ignore[operator]
    return n, time.perf_counter() - t0


def _warm(paths: list[str]) -> None:
    import pandas  # noqa: F401  - imported lazily by pyarrow; keep it out of the timings

    decode_ours(paths[:1])
    decode_reference(paths[:1])


def _pool_rate(paths: list[str], workers: int, repeat: int = 1) -> float:
    """Median rate of ``repeat`` decodes of ``paths`` split over ``workers`` processes."""
    shards = [paths[i::workers] for i in range(workers)]
    rates = []
    with ProcessPoolExecutor(max_workers=workers, initializer=_warm, initargs=(paths[:1],)) as pool:
        list(pool.map(_warm_noop, range(workers)))
        for _ in range(repeat):
            t0 = time.perf_counter()
            total = sum(pool.map(decode_ours, shards))
            rates.append(total / (time.perf_counter() - t0))
    return statistics.median(rates)


def _warm_noop(_: int) -> None:
    return None


def _tree_rss() -> int:
    import psutil

    me = psutil.Process()
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def _etl_peak_rss(raw: Path, out: Path, days: int) -> int:
    from nuro_ml.etl.job import ETLJobConfig, run_etl
    from nuro_ml.etl.spark_session import build_session

    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        spark = build_session("local[2]", app_name="bench-etl")
        cfg = ETLJobConfig(
            input_path=str(raw),
            output_path=str(out / "etl"),
            start="2024-01-01",
            end=str(date(2024, 1, 1) + timedelta(days=days)),
            quarantine_path=str(out / "quarantine"),
            run_key="bench",
            # A kept directory (--keep) must be converted again, not found up to date.
            reprocess=True,
        )
        run_etl(spark, cfg, progress=lambda _msg: None)
        spark.stop()
    finally:
        done.set()
        sampler.join()
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gb", type=float, default=0.15, help="input size in GB")
    parser.add_argument("--repeat", type=int, default=3, help="decode runs per side (median counts)")
    parser.add_argument("--keep", help="directory to generate into and keep (default: a temp dir)")
    parser.add_argument(
        "--metrics",
        nargs="+",
        choices=METRICS,
        default=list(METRICS),
        help="what to measure (default: all); `--gb 5 --metrics memory` is the large-input memory run",
    )
    args = parser.parse_args(argv)
    wanted = set(args.metrics)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nuro-bench-etl-"))
    try:
        paths = _generate(work / "raw", args.gb)
        gb = sum(Path(p).stat().st_size for p in paths) / 1e9
        if wanted & {"decode", "scaling"}:
            _warm(paths)
        if "decode" in wanted:
            ours, ref = [], []
            for _ in range(args.repeat):
                n_ours, t_ours = _timed(decode_ours, paths)
                n_ref, t_ref = _timed(decode_reference, paths)
                if n_ours != n_ref:
                    raise SystemExit(f"message counts differ: ours {n_ours}, reference {n_ref}")
                ours.append(n_ours / t_ours)
                ref.append(n_ref / t_ref)
            o, r = statistics.median(ours), statistics.median(ref)
            print(
                f"etl_decode_per_core: ours {o:.0f} msg/s, reference {r:.0f} msg/s, ratio {o / r:.2f}",
                flush=True,
            )
        if "scaling" in wanted:
            one = _pool_rate(paths, 1, args.repeat)
            two = _pool_rate(paths, 2, args.repeat)
            print(
                f"etl_scaling: 1 core {one:.0f} msg/s, 2 cores {two:.0f} msg/s, "
                f"efficiency {two / (2 * one):.2f}",
                flush=True,
            )
        if "memory" in wanted:
            days = len({Path(p).parent.parent.name for p in paths})
            t0 = time.perf_counter()
            peak = _etl_peak_rss(work / "raw", work, days)
            print(
                f"etl_memory: input {gb:.2f} GB, peak RSS {peak / 1e6:.0f} MB "
                f"(ETL {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
