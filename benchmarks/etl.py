"""Sensor-log ETL: decoding and the whole job, on both chunk layouts, against upstream references.

One run generates one set of synthetic drives (pose, GNSS, IMU, CAN, lidar, camera; Protobuf) in
the per-channel layout, and rewrites the same messages with the upstream ``mcap`` writer into
interleaved 1 MiB zstd chunks (how recorders write). It measures:

* ``etl_decode_per_core`` (per-channel input): messages/s decoded to typed Arrow columns by our
  reader (:class:`nuro_ml.etl.reader.McapTableReader`, topic by topic) in one process, against
  ``mcap.reader.make_reader(..., decoder_factories=[DecoderFactory()]).iter_decoded_messages()``.
* ``etl_decode_interleaved`` (interleaved input): our one-pass decoder
  (:func:`nuro_ml.etl.reader.decode_file`, every topic, chunk CRCs checked) against the same
  upstream loop (which checks no CRC). Both decode lines also give messages per CPU-second of
  each side (median of the runs).
* ``etl_job_throughput`` (interleaved input): the whole job (:func:`nuro_ml.etl.job.run_etl`,
  ``local[2]``: check, decode, map, Parquet per table, derived tables, publish) against a one-pass
  script (upstream reader and decoders, messages flattened into dicts, pyarrow Parquet per topic)
  in 2 processes; MB/s per core of input. The line also gives MB per CPU-second of each side (all
  their processes: driver, Spark JVM and Python workers; the script's pool), which a machine
  shared with other work does not distort the way it distorts wall time.
* ``etl_scaling`` (interleaved input): the job on ``local[1]`` against ``local[2]``.
* ``etl_memory`` (interleaved input): peak RSS of this process and its children (Spark JVM, Python
  workers) while the job runs on the input and on 4x the input.

Prints::

    etl_decode_per_core: ours X msg/s, reference Y msg/s, ratio Z (per-channel layout, ...)
    etl_decode_interleaved: ours X msg/s, reference Y msg/s, ratio Z (interleaved layout, ...)
    etl_job_throughput: ours X MB/s per core, reference Y MB/s per core, ratio Z (...)
    etl_scaling: 1 core X MB/s, 2 cores Y MB/s, efficiency Z (...)
    etl_memory: input G GB peak RSS M MB, 4x input G GB peak RSS M MB, ratio Z

Run: ``python -m benchmarks.etl [--gb G] [--repeat R] [--metrics ...] [--output-dir DIR]``; the
targets are stated for ``--gb 1`` and more. The job writes about as many bytes as it reads, so
the job and scaling lines name the file system their output went to: on a disk slower than the
job's two cores, both core counts wait on it and the scaling line measures the disk.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

#: Bytes per drive-second with the benchmark's sensor sizes (lidar 4096 points, 16 KiB images).
_BYTES_PER_SECOND = 0.83e6
_DAY0 = date(2024, 1, 1)

METRICS = ("decode", "interleaved", "job", "scaling", "memory")


def _generate(root: Path, gb: float, seed: int = 42) -> list[str]:
    """Per-channel drives under ``root`` in the hive layout (4 vehicles, 60 s drives)."""
    from nuro_ml.etl.generator import generate_interval

    drive_seconds = 60.0
    drives = max(4, math.ceil(gb * 1e9 / (_BYTES_PER_SECOND * drive_seconds)))
    vehicles = [f"veh-{i:03d}" for i in range(1, 5)]
    days = [_DAY0 + timedelta(days=i) for i in range(math.ceil(drives / len(vehicles)))]
    paths = generate_interval(
        root, days, vehicles, drive_seconds=drive_seconds, seed=seed, workers=2, layout="per-channel"
    )
    return [str(p) for p in paths]


def _rewrite_one(args: tuple[str, str]) -> None:
    """Rewrite a file's messages with the upstream writer: interleaved 1 MiB zstd chunks."""
    from mcap.reader import make_reader
    from mcap.writer import CompressionType, Writer

    src, dest = args
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        reader = make_reader(fin)
        writer = Writer(fout, chunk_size=1 << 20, compression=CompressionType.ZSTD)
        writer.start(profile="", library="benchmark")
        schema_ids: dict[int, int] = {}
        channel_ids: dict[int, int] = {}
        for record in reader.iter_metadata():
            writer.add_metadata(record.name, record.metadata)
        for schema, channel, message in reader.iter_messages(log_time_order=True):
            if channel.id not in channel_ids:
                if schema is not None and schema.id not in schema_ids:
                    schema_ids[schema.id] = writer.register_schema(schema.name, schema.encoding, schema.data)
                channel_ids[channel.id] = writer.register_channel(
                    channel.topic, channel.message_encoding, schema_ids.get(schema.id, 0) if schema else 0
                )
            writer.add_message(
                channel_ids[channel.id],
                message.log_time,
                message.data,
                message.publish_time,
                message.sequence,
            )
        writer.finish()


def _interleave(paths: list[str], src_root: Path, dest_root: Path) -> list[str]:
    jobs = [(p, str(dest_root / Path(p).relative_to(src_root))) for p in paths]
    todo = [j for j in jobs if not Path(j[1]).exists()]
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_rewrite_one, todo))
    return [dest for _, dest in jobs]


def decode_ours(paths: list[str]) -> int:
    """Decode every topic of ``paths``, topic by topic (pushdown), into Arrow tables."""
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


def decode_one_pass(paths: list[str]) -> int:
    """Decode every message of ``paths`` in one pass per file (each chunk once)."""
    from nuro_ml.etl.reader import decode_file

    return sum(table.num_rows for path in paths for _, table in decode_file(path))


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


def _flatten(msg: Any, prefix: str, out: dict[str, Any]) -> None:
    """A Protobuf message as one flat dict (nested fields joined with ``_``), as a script would."""
    for fd, value in msg.ListFields():
        name = prefix + fd.name
        if fd.type == fd.TYPE_MESSAGE and not fd.is_repeated:
            if fd.message_type.full_name == "google.protobuf.Timestamp":
                out[name] = value.ToNanoseconds()
            else:
                _flatten(value, name + "_", out)
        elif fd.type == fd.TYPE_MESSAGE:
            rows = []
            for item in value:
                row: dict[str, Any] = {}
                _flatten(item, "", row)
                rows.append(row)
            out[name] = rows
        elif fd.is_repeated:
            out[name] = list(value)
        else:
            out[name] = value


def script_one_file(args: tuple[str, str]) -> int:
    """The reference script for one file: upstream reader -> dicts -> Parquet per topic."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mcap.reader import make_reader
    from mcap_protobuf.decoder import DecoderFactory

    path, out = args
    rows: dict[str, list[dict[str, Any]]] = {}
    with open(path, "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        for _, channel, message, decoded in reader.iter_decoded_messages(log_time_order=False):
            row: dict[str, Any] = {"log_time": message.log_time}
            _flatten(decoded, "", row)
            rows.setdefault(channel.topic, []).append(row)
    for topic, items in rows.items():
        target = Path(out) / topic.strip("/").replace("/", "_")
        target.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(items), target / f"{Path(path).stem}-{abs(hash(path))}.parquet")
    return sum(len(v) for v in rows.values())


def run_script(paths: list[str], out: Path, workers: int) -> tuple[int, float, float]:
    """The reference script on ``paths`` in ``workers`` processes: (messages, seconds, CPU seconds)."""
    shutil.rmtree(out, ignore_errors=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_noop, range(workers)))  # processes started before the clock
        cpu0, t0 = _tree_cpu(), time.perf_counter()
        n = sum(pool.map(script_one_file, [(p, str(out)) for p in paths]))
        return n, time.perf_counter() - t0, _tree_cpu() - cpu0


def _noop(_: int) -> None:
    import pyarrow.parquet  # noqa: F401
    from mcap_protobuf.decoder import DecoderFactory  # noqa: F401


def _timed(fn: Any, paths: list[str]) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn(paths)
    return n, time.perf_counter() - t0


def _timed_cpu(fn: Any, paths: list[str]) -> tuple[int, float, float]:
    """Messages, wall seconds and CPU seconds of this process (one process, one thread)."""
    c0 = time.process_time()
    n, wall = _timed(fn, paths)
    return n, wall, time.process_time() - c0


def _warm(paths: list[str]) -> None:
    import pandas  # noqa: F401  - imported lazily by pyarrow; keep it out of the timings

    decode_ours(paths[:1])
    decode_one_pass(paths[:1])
    decode_reference(paths[:1])


def _compare(name: str, ours_fn: Any, paths: list[str], repeat: int, note: str) -> None:
    ours, ref, ours_cpu, ref_cpu = [], [], [], []
    for _ in range(repeat):
        n_ours, t_ours, c_ours = _timed_cpu(ours_fn, paths)
        n_ref, t_ref, c_ref = _timed_cpu(decode_reference, paths)
        if n_ours != n_ref:
            raise SystemExit(f"{name}: message counts differ: ours {n_ours}, reference {n_ref}")
        ours.append(n_ours / t_ours)
        ref.append(n_ref / t_ref)
        ours_cpu.append(n_ours / c_ours)
        ref_cpu.append(n_ref / c_ref)
    o, r = statistics.median(ours), statistics.median(ref)
    # CPU time as well: on a shared machine, wall-clock rates of the two sides, taken at different
    # instants, swing with the other tenants' load far more than CPU time does.
    oc, rc = statistics.median(ours_cpu), statistics.median(ref_cpu)
    print(
        f"{name}: ours {o:.0f} msg/s, reference {r:.0f} msg/s, ratio {o / r:.2f} ({note}; CPU time: "
        f"ours {oc:.0f} msg per CPU-second, reference {rc:.0f}, ratio {oc / rc:.2f})",
        flush=True,
    )


def _tree_sum(measure: Any) -> float:
    """``measure(process)`` summed over this process and its children (Spark JVM, workers, pools)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            total += measure(proc)
        except psutil.Error:
            continue
    return total


def _tree_rss() -> int:
    return int(_tree_sum(lambda proc: proc.memory_info().rss))


def _tree_cpu() -> float:
    """CPU seconds used so far by this process and its children."""
    return _tree_sum(lambda proc: sum(proc.cpu_times()[:2]))


def _import_job(_: int) -> int:
    import nuro_ml.etl.process  # noqa: F401

    return 0


def run_job(raw: Path, out: Path, master: str) -> tuple[dict[str, Any], float, int, float]:
    """The whole ETL job on ``raw`` with a fresh session; (result, seconds without start-up, peak RSS,
    CPU seconds of the driver, the JVM and the Python workers)."""
    from nuro_ml.etl.job import ETLJobConfig, run_etl
    from nuro_ml.etl.spark_session import build_session

    days = sorted(p.name.split("=", 1)[1] for p in raw.glob("date=*"))
    shutil.rmtree(out, ignore_errors=True)
    spark = build_session(master, app_name="bench-etl", conf={"spark.default.parallelism": master[6:-1]})
    # JVM and Python workers up, with the job's modules imported, before the clock (as the
    # reference's process pool is started before its clock).
    spark.sparkContext.parallelize(range(4), 4).map(_import_job).count()
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
        cfg = ETLJobConfig(
            input_path=str(raw),
            output_path=str(out / "etl"),
            start=days[0],
            end=str(date.fromisoformat(days[-1]) + timedelta(days=1)),
            quarantine_path=str(out / "quarantine"),
            run_key="bench",
            reprocess=True,
        )
        cpu0, t0 = _tree_cpu(), time.perf_counter()
        result = run_etl(spark, cfg, progress=lambda _msg: None)
        seconds = time.perf_counter() - t0
        cpu = _tree_cpu() - cpu0
    finally:
        done.set()
        sampler.join()
        spark.stop()
        # Each run's output is only needed for its timing; keep the disk for the next run.
        shutil.rmtree(out, ignore_errors=True)
    return result, seconds, peak, cpu


def _gb(paths: list[str]) -> float:
    return sum(os.path.getsize(p) for p in paths) / 1e9


def _mix(paths: list[str]) -> str:
    from nuro_ml.etl import mcap_io

    counts: dict[str, int] = {}
    for path in paths[:1]:
        with mcap_io.mapped(path) as buf:
            summary = mcap_io.read_summary(buf)
            assert summary is not None
            for cid, n in summary.channel_counts.items():
                topic = summary.channels[cid].topic
                counts[topic] = counts.get(topic, 0) + n
    total = sum(counts.values())
    return " ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(counts.items()))


def _filesystem(path: Path) -> str:
    """The type and mount point of the file system holding ``path`` (``tmpfs /dev/shm``)."""
    best = ("?", "/")
    target = str(path.resolve())
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            _device, mount, kind, *_rest = line.split()
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[1]):
                best = (kind, mount)
    return f"{best[0]} {best[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gb", type=float, default=0.15, help="input size in GB")
    parser.add_argument("--repeat", type=int, default=3, help="decode runs per side (median counts)")
    parser.add_argument("--keep", help="directory to generate into and keep (default: a temp dir)")
    parser.add_argument(
        "--output-dir",
        help="where the job and the reference script write their tables (default: beside the input); "
        "on a machine whose disk, not its CPU, limits the writes, a fast disk such as /dev/shm",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        choices=METRICS,
        default=list(METRICS),
        help="what to measure (default: all)",
    )
    args = parser.parse_args(argv)
    wanted = set(args.metrics)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nuro-bench-etl-"))
    out = (
        Path(tempfile.mkdtemp(prefix="nuro-bench-etl-out-", dir=args.output_dir)) if args.output_dir else work
    )
    where = f"output on {_filesystem(out)}"
    try:
        per_channel = _generate(work / "raw", args.gb)
        interleaved = _interleave(per_channel, work / "raw", work / "interleaved")
        size = int(_gb(interleaved) * 1e9)
        mix = _mix(per_channel)
        if wanted & {"decode", "interleaved"}:
            _warm(interleaved)
        if "decode" in wanted:
            _compare(
                "etl_decode_per_core",
                decode_ours,
                per_channel,
                args.repeat,
                f"per-channel layout, {len(per_channel)} files, {_gb(per_channel):.2f} GB",
            )
        if "interleaved" in wanted:
            _compare(
                "etl_decode_interleaved",
                decode_one_pass,
                interleaved,
                args.repeat,
                f"interleaved 1 MiB zstd chunks by the upstream writer, {len(interleaved)} files, "
                f"{size / 1e9:.2f} GB; messages: {mix}",
            )
        if "job" in wanted:
            result, seconds, _, cpu = run_job(work / "interleaved", out / "job", "local[2]")
            n_ref, t_ref, cpu_ref = run_script(interleaved, out / "script", 2)
            n = sum(result["messages"].values())
            if n != n_ref:
                raise SystemExit(f"etl_job_throughput: message counts differ: job {n}, script {n_ref}")
            ours, ref = size / 1e6 / seconds / 2, size / 1e6 / t_ref / 2
            print(
                f"etl_job_throughput: ours {ours:.1f} MB/s per core, reference {ref:.1f} MB/s per core, "
                f"ratio {ours / ref:.2f} (2 cores; interleaved layout, {len(interleaved)} files, {where}, "
                f"{size / 1e9:.2f} GB, {n} messages; ours {n / seconds:.0f} msg/s, "
                f"reference {n_ref / t_ref:.0f} msg/s; CPU time: ours {size / 1e6 / cpu:.1f} MB per "
                f"CPU-second, reference {size / 1e6 / cpu_ref:.1f}, ratio {cpu_ref / cpu:.2f}; "
                f"messages: {mix})",
                flush=True,
            )
        if "scaling" in wanted:
            _, one, _, cpu_one = run_job(work / "interleaved", out / "job1", "local[1]")
            _, two, _, cpu_two = run_job(work / "interleaved", out / "job2", "local[2]")
            print(
                f"etl_scaling: 1 core {size / 1e6 / one:.1f} MB/s, 2 cores {size / 1e6 / two:.1f} MB/s, "
                f"efficiency {one / (2 * two):.2f} (the job, local[1] against local[2]; "
                f"interleaved layout, {where}, "
                f"{size / 1e9:.2f} GB; CPU seconds {cpu_one:.1f} on 1 core, {cpu_two:.1f} on 2)",
                flush=True,
            )
        if "memory" in wanted:
            _, _, peak1, _ = run_job(work / "interleaved", out / "mem1", "local[2]")
            big = work / "interleaved4"
            for k in range(4):
                for p in interleaved:
                    rel = Path(p).relative_to(work / "interleaved")
                    dest = big / rel.parent / f"{rel.stem}-{k}.mcap"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if not dest.exists():
                        os.link(p, dest)
            _, _, peak4, _ = run_job(big, out / "mem4", "local[2]")
            print(
                f"etl_memory: input {size / 1e9:.2f} GB peak RSS {peak1 / 1e6:.0f} MB, "
                f"4x input {4 * size / 1e9:.2f} GB peak RSS {peak4 / 1e6:.0f} MB, ratio {peak4 / peak1:.2f} "
                "(the job on local[2], interleaved layout)",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        if out != work:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
