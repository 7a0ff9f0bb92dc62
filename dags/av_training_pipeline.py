"""The end-to-end training pipeline: provision, ETL, features, GPU gate, train, tear down.

Each daily run processes one day of drive logs (its data interval) unless the trigger form
names another date range. Everything the run creates outside Airflow is keyed by the run,
so re-running a day reuses or replaces its own outputs instead of duplicating them.

By default the run is self-contained: Spark runs in the task, a local Ray head is provisioned
with Terraform and destroyed at the end. On a deployed platform the ``spark_conn_id`` and
``ray_conn_id`` parameters name the Spark master and Ray cluster connections instead: the ETL
is submitted to that master and training goes to that cluster; the provision and teardown
steps then apply ``terraform/environments/existing``, which creates nothing.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, get_current_context, task
from nuro_ml import settings
from nuro_ml.operators.capacity import GpuLeaseReleaseOperator
from nuro_ml.operators.feast import FeastApplyOperator, FeastMaterializeOperator
from nuro_ml.operators.ray import RayJobOperator
from nuro_ml.operators.spark import MCAPToParquetOperator
from nuro_ml.operators.terraform import TerraformApplyOperator, TerraformDestroyOperator
from nuro_ml.operators.training_data import StageTrainingShardsOperator
from nuro_ml.sensors.gpu_capacity import GpuCapacitySensor

DAG_ID = "av_training_pipeline"
LOCAL_ENVIRONMENT = settings.terraform_dir() / "environments" / "local"
EXISTING_ENVIRONMENT = settings.terraform_dir() / "environments" / "existing"
#: The run's own local Ray head, or nothing when the run trains on the cluster of ``ray_conn_id``.
ENVIRONMENT = (
    "{{ '" + str(EXISTING_ENVIRONMENT) + "' if params.ray_conn_id else '" + str(LOCAL_ENVIRONMENT) + "' }}"
)
# Named as the YAML pipelines name it: one asset, whichever DAG file declares it (two names for one
# URI would leave the asset inactive on a deployment that parses both files).
SCENE_STATS = Asset(
    name="scene_stats", uri=f"file://{settings.etl_output_dir()}/scene_stats", extra={"format": "parquet"}
)

INTERVAL = "ti.xcom_pull(task_ids='plan_interval')"
CLUSTER = "ti.xcom_pull(task_ids='cluster')"
SHARDS = "(ti.xcom_pull(task_ids='stage_training_shards') or {})"
RUN_DIR = str(settings.artifacts_dir()) + "/{{ run_id | replace(':', '_') | replace('+', '_') }}"
XGBOOST_ENTRYPOINT = (
    "python train_xgboost.py"
    " --start {{ " + INTERVAL + "['start'] }} --end {{ " + INTERVAL + "['end'] }}"
    " --vehicles {{ params.vehicles | join(',') }}"
    " --num-workers {{ params.gpus }} --gpus-per-worker 1"
    " --num-boost-round {{ params.num_boost_round }} --max-depth {{ params.max_depth }}"
    " --learning-rate {{ params.learning_rate }}"
    " --output-dir " + RUN_DIR
)
TORCH_CREDENTIALS = (
    "{{ {'AWS_ACCESS_KEY_ID': params.aws_conn_id ~ ':login', "
    "'AWS_SECRET_ACCESS_KEY': params.aws_conn_id ~ ':password'} if params.model == 'torch' else {} }}"
)
# Workers reserve the run's GPUs (logical ones on the local cluster); CUDA and NCCL are used when
# torch sees real GPUs there, gloo on CPU otherwise.
TORCH_ENTRYPOINT = (
    "python train_torch.py --manifest {{ " + SHARDS + ".get('manifest_uri') }}"
    "{% if "
    + SHARDS
    + ".get('endpoint_url') %} --s3-endpoint-url {{ "
    + SHARDS
    + "['endpoint_url'] }}{% endif %}"
    " --num-workers {{ params.gpus }} --gpus-per-worker 1 --epochs {{ params.epochs }}"
    " --output-dir " + RUN_DIR
)

with DAG(
    dag_id=DAG_ID,
    description="Terraform -> Spark ETL of MCAP drive logs -> Feast -> GPU capacity gate -> Ray training",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    # Params keep their types (lists, ints) when passed into operator arguments.
    render_template_as_native_obj=True,
    tags=["nuro-ml", "training", "perception"],
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(seconds=10)},
    doc_md=__doc__,
    params={
        "date_from": Param(
            None,
            type=["null", "string"],
            format="date",
            title="First day",
            description="First day of drive logs to process (default: the run's data interval).",
        ),
        "date_to": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Last day",
            description="Last day, inclusive (default: the run's data interval).",
        ),
        "vehicles": Param(
            ["veh-001", "veh-002"],
            type="array",
            items={"type": "string", "pattern": "^[a-z0-9-]+$"},
            minItems=1,
            title="Vehicles",
            description="Vehicle ids whose drives are used.",
        ),
        "drive_seconds": Param(
            180,
            type="integer",
            minimum=10,
            maximum=86400,
            title="Synthetic drive length (s)",
            description="Length of each drive generated when a day has no logs yet.",
        ),
        "team": Param(
            "perception",
            type="string",
            pattern="^[a-z][a-z0-9-]*$",
            title="Team",
            description="Team whose GPU quota the training job is charged to.",
        ),
        "gpus": Param(
            2, type="integer", minimum=1, maximum=64, title="GPUs", description="GPUs for training."
        ),
        "cluster_gpus": Param(
            4,
            type="integer",
            minimum=1,
            maximum=64,
            title="Cluster GPUs",
            description="GPUs the provisioned local cluster advertises.",
        ),
        "model": Param(
            "xgboost",
            enum=["xgboost", "torch"],
            title="Model",
            description="xgboost: boosted trees on Feast scene features. torch: the hard-brake "
            "event detector (PyTorch, Ray TorchTrainer) on ego-motion windows staged as shards in "
            "object storage (needs shards_uri and torch on the Ray cluster).",
        ),
        "shards_uri": Param(
            None,
            type=["null", "string"],
            pattern="^s3://[a-z0-9.-]+(/.*)?$",
            title="Training shards location",
            description="s3://bucket/prefix the torch model's shards are staged under.",
        ),
        "aws_conn_id": Param(
            "aws_default",
            type="string",
            title="Object storage connection",
            description="Connection of the shard bucket: access key (login), secret key (password), "
            "endpoint_url and region_name extras.",
        ),
        "epochs": Param(4, type="integer", minimum=1, maximum=1000, title="Epochs (torch)"),
        "num_boost_round": Param(40, type="integer", minimum=1, maximum=5000, title="Boosting rounds"),
        "max_depth": Param(4, type="integer", minimum=1, maximum=16, title="Tree depth"),
        "learning_rate": Param(0.2, type="number", exclusiveMinimum=0, maximum=1, title="Learning rate"),
        "ray_port": Param(6390, type="integer", minimum=1024, maximum=65535, title="Ray GCS port"),
        "dashboard_port": Param(
            8275, type="integer", minimum=1024, maximum=65535, title="Ray dashboard port"
        ),
        "spark_conn_id": Param(
            None,
            type=["null", "string"],
            title="Spark connection",
            description="Spark master connection (e.g. spark_default) the ETL is submitted to; "
            "empty runs Spark inside the task.",
        ),
        "mapping_file": Param(
            None,
            type=["null", "string"],
            title="Topic mapping",
            description="Topic mapping file (YAML/JSON) for the ETL: which topics feed which table; "
            "empty uses the built-in mapping (ROS 2 standard types, Foxglove schemas, our own types).",
        ),
        "ray_conn_id": Param(
            None,
            type=["null", "string"],
            title="Ray connection",
            description="Ray cluster connection (e.g. ray_default) to train on; empty provisions "
            "a local Ray head with Terraform for the run.",
        ),
    },
) as dag:

    @task
    def plan_interval() -> dict[str, Any]:
        """Resolve the days to process from the trigger form or the data interval."""
        context = get_current_context()
        params = context["params"]
        if params.get("date_from"):
            first = date.fromisoformat(params["date_from"])
            last = date.fromisoformat(params.get("date_to") or params["date_from"])
        else:
            interval_start, interval_end = context["data_interval_start"], context["data_interval_end"]
            if interval_start is None or interval_end is None:
                raise ValueError("params: give date_from/date_to; this run has no data interval")
            first = interval_start.date()
            last = max(first, (interval_end - timedelta(microseconds=1)).date())
        if last < first:
            raise ValueError(f"params: date_to {last} is before date_from {first}")
        if params.get("model") == "torch" and not params.get("shards_uri"):
            raise ValueError(
                "params: model 'torch' needs shards_uri (s3://bucket/prefix for the training shards)"
            )
        days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
        start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
        end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        return {"dates": days, "start": start.isoformat(), "end": end.isoformat()}

    @task
    def ensure_drive_logs(interval: Any) -> dict[str, Any]:
        """Write synthetic drives for days that have no logs yet (existing files are kept)."""
        from nuro_ml.etl.generator import generate_interval

        params = get_current_context()["params"]
        before = (
            {p for p in settings.raw_logs_dir().rglob("*.mcap")}
            if settings.raw_logs_dir().exists()
            else set()
        )
        files = generate_interval(
            settings.raw_logs_dir(),
            [date.fromisoformat(d) for d in interval["dates"]],
            params["vehicles"],
            drive_seconds=float(params["drive_seconds"]),
            seed=20261124,
        )
        return {"files": len(files), "generated": len(set(files) - before)}

    provision = TerraformApplyOperator(
        task_id="provision",
        working_dir=ENVIRONMENT,
        variables={
            "num_gpus": "{{ params.cluster_gpus }}",
            "ray_port": "{{ params.ray_port }}",
            "dashboard_port": "{{ params.dashboard_port }}",
            "python": sys.executable,
        },
    )

    interval = plan_interval()
    logs = ensure_drive_logs(interval)

    @task
    def cluster(provisioned: Any) -> dict[str, Any]:
        """The Ray cluster to train on: the run's own head, or the one ``ray_conn_id`` names."""
        from nuro_ml.capacity.backends.ray import RayBackend, RayBackendConfig
        from nuro_ml.hooks.ray import RayHook

        conn_id = get_current_context()["params"].get("ray_conn_id")
        if not conn_id:
            return dict(provisioned)
        address = RayHook(ray_conn_id=conn_id).address
        capacity = RayBackend(RayBackendConfig(address=address)).get_capacity()[0]
        return {"dashboard_url": address, "gpu_count": capacity.total_gpus}

    ray_cluster = cluster(provision.output)

    etl = MCAPToParquetOperator(
        task_id="etl",
        start="{{ " + INTERVAL + "['start'] }}",
        end="{{ " + INTERVAL + "['end'] }}",
        vehicles="{{ params.vehicles }}",
        conn_id="{{ params.spark_conn_id }}",
        mapping_path="{{ params.mapping_file }}",
        max_bad_file_share=0.2,
        outlets=[SCENE_STATS],
    )

    feast_apply = FeastApplyOperator(task_id="feast_apply")
    feast_materialize = FeastMaterializeOperator(
        task_id="feast_materialize",
        start="{{ " + INTERVAL + "['start'] }}",
        end="{{ " + INTERVAL + "['end'] }}",
        # Late drive uploads land in earlier partitions; a day of lookback picks them up.
        lookback=timedelta(days=1),
    )

    @task
    def register_capacity(cluster: Any) -> dict[str, Any]:
        """Record the provisioned pool and the team's quota in the ledger (idempotent)."""
        from nuro_ml.capacity.ledger import QuotaLedger

        team = get_current_context()["params"]["team"]
        ledger = QuotaLedger(settings.ledger_url())
        gpus = int(cluster["gpu_count"])
        ledger.upsert_pool("local", capacity=gpus, gpu_type="logical")
        # The whole local cluster is the team's; nothing to borrow from other teams here.
        ledger.upsert_quota(team, "local", nominal=gpus, borrowing_limit=0)
        return {"pool": "local", "capacity_gpus": gpus, "team": team}

    capacity = register_capacity(ray_cluster)

    wait_for_gpus = GpuCapacitySensor(
        task_id="wait_for_gpus",
        team="{{ params.team }}",
        gpus="{{ params.gpus }}",
        pool="local",
        backend={"type": "ray", "address": "{{ " + CLUSTER + "['dashboard_url'] }}"},
        poke_interval=2,
        timeout=600,
    )

    train = RayJobOperator(
        task_id="train",
        address="{{ " + CLUSTER + "['dashboard_url'] }}",
        ray_conn_id="{{ params.ray_conn_id }}",
        entrypoint="{% if params.model == 'torch' %}"
        + TORCH_ENTRYPOINT
        + "{% else %}"
        + XGBOOST_ENTRYPOINT
        + "{% endif %}",
        # Rendered to a dict (native templates): the bucket's keys reach only the torch job.
        env_from_connections=TORCH_CREDENTIALS,  # type: ignore[arg-type]
        runtime_env={
            "working_dir": str(settings.workloads_dir()),
            "env_vars": {"NURO_ML_DATA_DIR": str(settings.data_dir())},
        },
        entrypoint_num_cpus=1,
    )

    stage_shards = StageTrainingShardsOperator(
        task_id="stage_training_shards",
        # Nothing to stage for xgboost: an empty destination makes the task a no-op.
        destination="{{ params.shards_uri if params.model == 'torch' else '' }}",
        start="{{ " + INTERVAL + "['start'] }}",
        end="{{ " + INTERVAL + "['end'] }}",
        end_is_exclusive=True,
        vehicles="{{ params.vehicles }}",
        aws_conn_id="{{ params.aws_conn_id }}",
    )

    release_gpus = GpuLeaseReleaseOperator(
        task_id="release_gpus",
        lease_id="{{ ti.xcom_pull(task_ids='wait_for_gpus') }}",
    )

    @task
    def summarize(interval: Any, etl_result: Any, features: Any, training: Any) -> dict[str, Any]:
        """Collect what the run produced into one summary (XCom and a JSON file)."""
        from nuro_ml.capacity.ledger import QuotaLedger

        context = get_current_context()
        run_id = context["run_id"]
        lease_id = context["ti"].xcom_pull(task_ids="wait_for_gpus")
        ledger = QuotaLedger(settings.ledger_url())
        lease = ledger.lease(str(lease_id))
        if lease is None:
            raise ValueError(f"lease {lease_id!r} taken by wait_for_gpus is not in the ledger")
        request = next((r for r in ledger.requests(key=lease.key) if r.lease_id == lease.lease_id), None)
        waited = (
            (request.admitted_at - request.enqueued_at).total_seconds()
            if request and request.admitted_at
            else 0.0
        )
        gpu_wait = {
            "lease_id": lease.lease_id,
            "team": lease.team,
            "pool": lease.pool,
            "gpus": lease.gpus,
            "state": str(lease.state.value),
            "wait_seconds": waited,
        }
        summary = {
            "dag_id": DAG_ID,
            "run_id": run_id,
            "dates": interval["dates"],
            "etl": {
                k: etl_result.get(k)
                for k in ("files", "bytes", "messages", "rows", "excluded", "quarantined")
            },
            "features": features,
            "gpu_wait": gpu_wait,
            "training": training,
            "artifacts": training.get("artifact_uri"),
        }
        out = (
            settings.data_dir() / "summaries" / DAG_ID / f"{run_id.replace(':', '_').replace('+', '_')}.json"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        tmp.replace(out)
        return summary

    teardown = TerraformDestroyOperator(
        task_id="teardown",
        working_dir=ENVIRONMENT,
        variables={
            "num_gpus": "{{ params.cluster_gpus }}",
            "ray_port": "{{ params.ray_port }}",
            "dashboard_port": "{{ params.dashboard_port }}",
            "python": sys.executable,
        },
    )

    summary = summarize(interval, etl.output, feast_materialize.output, train.output)

    logs >> etl >> feast_apply >> feast_materialize >> wait_for_gpus
    etl >> stage_shards >> train
    capacity >> wait_for_gpus >> train >> summary
    train >> release_gpus.as_teardown(setups=wait_for_gpus)
    [summary, release_gpus] >> teardown.as_teardown(setups=provision)
