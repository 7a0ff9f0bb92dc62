"""``nuro-ml demo``: run the end-to-end DAG on embedded defaults and print what it produced.

The DAG runs with ``airflow dags test`` against the local Airflow home, exactly as a user
would run it by hand; the summary is read from the file the DAG's ``summarize`` task writes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nuro_ml import settings
from nuro_ml.airflow_home import airflow_env
from nuro_ml.cli_support import iso_date

if TYPE_CHECKING:
    from nuro_ml.capacity.records import Lease

DEMO_DAG_ID = "av_training_pipeline"


def _airflow(args: list[str], env: dict[str, str], log: Path) -> int:
    """Run an ``airflow`` CLI command with its output appended to ``log``."""
    airflow_bin = Path(sys.executable).with_name("airflow")
    with log.open("a") as fh:
        fh.write(f"\n$ airflow {' '.join(args)}\n")
        fh.flush()
        return subprocess.run(
            [str(airflow_bin), *args], env=env, stdout=fh, stderr=subprocess.STDOUT
        ).returncode


def _latest_summary(since: float) -> Path | None:
    """The summary the DAG wrote during this demo (run ids are only known once the run exists)."""
    written = [
        p
        for p in (settings.data_dir() / "summaries" / DEMO_DAG_ID).glob("*.json")
        if p.stat().st_mtime >= since
    ]
    return max(written, key=lambda p: p.stat().st_mtime) if written else None


def final_lease(summary: dict[str, Any], ledger_url: str | None = None) -> Lease | None:
    """The GPU lease of the run as the ledger holds it now, after the DAG released it.

    The summary task runs while the lease is still held (the release is a teardown after it),
    so the state it wrote is not the final one.
    """
    from nuro_ml.capacity.ledger import QuotaLedger

    lease_id = (summary.get("gpu_wait") or {}).get("lease_id")
    if not lease_id:
        return None
    return QuotaLedger(ledger_url or settings.ledger_url()).lease(str(lease_id))


def _lease_line(wait: dict[str, Any], lease: Lease | None, now: datetime) -> str:
    line = (
        f"  GPU wait         {wait.get('wait_seconds', 0):.1f} s for {wait.get('gpus', '?')} GPUs "
        f"(team {wait.get('team', '?')}, lease {wait.get('lease_id', '?')}"
    )
    if lease is None:
        return line + ", not found in the ledger)"
    held = f"held {lease.held_seconds(now):.1f} s, {lease.gpu_hours(now):.4f} GPU-hours"
    if lease.released_at is not None:
        return line + f", released at {lease.released_at:%H:%M:%S} UTC, {held})"
    return line + f", {lease.state.value}, {held})"


def format_summary(
    summary: dict[str, Any], wall_seconds: float, lease: Lease | None = None, now: datetime | None = None
) -> str:
    """Render the DAG's summary as the short report the demo prints.

    ``lease`` is the run's GPU lease in its final state (:func:`final_lease`).
    """
    etl = summary.get("etl") or {}
    messages = etl.get("messages") or {}
    rows = etl.get("rows") or {}
    features = summary.get("features") or {}
    wait = summary.get("gpu_wait") or {}
    training = summary.get("training") or {}
    metrics = training.get("metrics") or {}
    lines = [
        "",
        "nuro-ml demo: run summary",
        f"  run              {summary.get('run_id')}  days {', '.join(summary.get('dates', []))}",
        f"  drive logs       {etl.get('files', 0)} MCAP files, {int(etl.get('bytes') or 0) / 1e6:.1f} MB, "
        f"{sum(int(v) for v in messages.values()):,} messages "
        f"({', '.join(f'{k} {int(v):,}' for k, v in sorted(messages.items()))})",
        f"  parquet rows     {sum(int(v) for v in rows.values()):,} "
        f"({', '.join(f'{k} {int(v):,}' for k, v in sorted(rows.items()))})",
        f"  quarantined      {len(etl.get('quarantined') or [])} files",
        f"  features         {int(features.get('rows_total') or 0):,} rows materialized to "
        f"{features.get('online_store')} "
        f"({', '.join(f'{k} {int(v):,}' for k, v in sorted((features.get('rows') or {}).items()))})",
        f"  feature cache    hits {features.get('cache_hits', 0)}, misses {features.get('cache_misses', 0)}",
        _lease_line(wait, lease, now or datetime.now(UTC)),
        f"  training         {training.get('status', '?')}: "
        + ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
        ),
        f"  artifacts        {summary.get('artifacts')}",
        f"  total time       {wall_seconds:.1f} s",
    ]
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    env = airflow_env()
    log_dir = settings.data_dir() / "demo-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"demo-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.log"
    day: date = args.date or datetime.now(UTC).date() - timedelta(days=1)
    print(
        f"nuro-ml demo: Airflow home {env['AIRFLOW_HOME']}, data {settings.data_dir()}, log {log}", flush=True
    )
    print("nuro-ml demo: preparing the Airflow metadata database", flush=True)
    if _airflow(["db", "migrate"], env, log) != 0:
        print(f"nuro-ml demo: `airflow db migrate` failed, see {log}", file=sys.stderr)
        return 1
    print(f"nuro-ml demo: running {DEMO_DAG_ID} for {day.isoformat()} (airflow dags test)", flush=True)
    launched = time.time()
    conf = {"date_from": day.isoformat(), "date_to": day.isoformat()}
    rc = _airflow(["dags", "test", DEMO_DAG_ID, day.isoformat(), "-c", json.dumps(conf)], env, log)
    summary_file = _latest_summary(launched)
    if rc != 0 or summary_file is None:
        tail = log.read_text().splitlines()[-60:]
        print("\n".join(tail), file=sys.stderr)
        print(f"nuro-ml demo: the DAG run failed (exit {rc}); full log: {log}", file=sys.stderr)
        return rc or 1
    summary = json.loads(summary_file.read_text())
    print(format_summary(summary, time.monotonic() - started, final_lease(summary)))
    print(f"  task log         {log}")
    return 0


def run_airflow_home(args: argparse.Namespace) -> int:
    env = airflow_env()
    print(env["AIRFLOW_HOME"])
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser("demo", help="run the end-to-end pipeline on embedded defaults")
    demo.add_argument(
        "--date", type=iso_date, help="day of drive logs to process (YYYY-MM-DD, default yesterday UTC)"
    )
    demo.set_defaults(func=run_demo)
    home = subparsers.add_parser("airflow-home", help="create the local Airflow home and print its path")
    home.set_defaults(func=run_airflow_home)
