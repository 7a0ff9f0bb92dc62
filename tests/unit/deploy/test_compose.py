"""docker/docker-compose.yaml: structure, secrets, environment and ports agree with the code."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from nuro_ml.capacity.engine import SUPPORTED_DIALECTS
from nuro_ml.features.config import FeastSettings
from sqlalchemy.engine import make_url

from tests.unit.deploy.deploy_files import (
    COMPOSE_TEST_ENV,
    DOCKER_DIR,
    REPO,
    InterpolationError,
    container_ports,
    depends_on,
    environment,
    healthcheck_argv,
    interpolate,
    is_read_by_code,
    load_compose,
    published_ports,
    pyproject,
    strings_in,
)

IMAGE_PREFIX = "nuro-ml-platform:"
#: Variables of third-party programs, with the program that reads them.
THIRD_PARTY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "ray",
    "DUMB_INIT_SETSID": "dumb-init (the Airflow image's init)",
}


def our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if str(s.get("image", "")).startswith(IMAGE_PREFIX)}


def test_secrets_only_come_from_the_operator_environment() -> None:
    for name in COMPOSE_TEST_ENV:
        partial = {k: v for k, v in COMPOSE_TEST_ENV.items() if k != name}
        with pytest.raises(InterpolationError, match=name):
            load_compose(partial)
    first = load_compose()
    second = load_compose({k: v + "-rotated" for k, v in COMPOSE_TEST_ENV.items()})
    for service_name, service in first["services"].items():
        other = environment(second["services"][service_name])
        for key, value in environment(service).items():
            if re.search(r"PASSWORD|SECRET|FERNET|JWT", key) and not key.endswith("_FILE"):
                assert value != other[key], f"{service_name}: {key} is a literal in the compose file"
            if any(secret in value for secret in COMPOSE_TEST_ENV.values()):
                assert value != other[key]


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$$HOSTNAME ${SET} $SET ${EMPTY:-d} ${EMPTY-d} ${UNSET:-d} ${SET:+alt}", env) == (
        "$HOSTNAME x x d  d alt"
    )
    with pytest.raises(InterpolationError, match="EMPTY"):
        interpolate("${EMPTY:?needed}", env)


def test_the_stack_has_every_component(compose: dict[str, Any]) -> None:
    commands = {name: " ".join(map(str, s.get("command") or [])) for name, s in compose["services"].items()}
    joined = "\n".join(commands.values())
    for piece in (
        "airflow db migrate",
        "airflow scheduler",
        "airflow dag-processor",
        "airflow triggerer",
        "airflow api-server",
        "airflow celery worker",
        "org.apache.spark.deploy.master.Master",
        "org.apache.spark.deploy.worker.Worker",
        "ray start --head",
        "ray start --address=",
    ):
        assert piece in joined, f"no service runs {piece!r}"
    images = {str(s.get("image")) for s in compose["services"].values()}
    assert any(i.startswith("postgres:") for i in images) and any(i.startswith("redis:") for i in images)


def test_depends_on_targets_exist_with_meaningful_conditions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if condition == "service_healthy":
                assert healthcheck_argv(services[target]), f"{name} waits for {target} to be healthy"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is a one-shot for {name}"
            else:
                assert condition == "service_started"


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("restart") != "no":
            assert healthcheck_argv(service), f"{name} has no healthcheck"
            assert service.get("restart") in ("always", "unless-stopped", "on-failure")


def test_volumes_mounts_and_build_paths_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for mount in service.get("volumes") or []:
            source = str(mount).split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER_DIR / source).resolve().exists(), f"{name}: bind mount {source} is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build:
            context = (DOCKER_DIR / build["context"]).resolve()
            assert context == REPO
            assert (context / build["dockerfile"]).is_file()
    for secret in (compose.get("secrets") or {}).values():
        if "environment" in secret:
            assert secret["environment"] in COMPOSE_TEST_ENV
        else:
            assert secret["file"] == COMPOSE_TEST_ENV["AIRFLOW_PASSWORDS_FILE"]
    api = compose["services"]["airflow-apiserver"]
    assert environment(api)["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == "/run/secrets/{}".format(
        *api["secrets"]
    )


def test_task_runners_share_one_data_volume(compose: dict[str, Any]) -> None:
    """Celery workers, Spark workers and Ray nodes read and write the same NURO_ML_DATA_DIR."""
    runners = {
        name: service
        for name, service in our_services(compose).items()
        if re.search(
            r"celery worker|deploy\.worker\.Worker|ray start", " ".join(service.get("command") or [])
        )
    }
    assert len(runners) == 4
    volumes = set()
    for name, service in runners.items():
        data_dir = environment(service).get("NURO_ML_DATA_DIR")
        assert data_dir, f"{name} runs platform code without NURO_ML_DATA_DIR"
        mounted = [
            str(m).split(":")[0] for m in service.get("volumes") or [] if str(m).split(":")[1] == data_dir
        ]
        assert mounted, f"{name}: nothing is mounted at {data_dir}"
        volumes.update(mounted)
    assert len(volumes) == 1, volumes


def test_environment_names_are_ones_the_code_reads(compose: dict[str, Any], airflow_answers: Any) -> None:
    for name, service in our_services(compose).items():
        for key in environment(service):
            if key.startswith("NURO_ML_"):
                assert is_read_by_code(key), f"{name}: nothing in nuro_ml reads {key}"
            elif key.startswith("AIRFLOW__"):
                section, _, option = key.removeprefix("AIRFLOW__").lower().partition("__")
                default = airflow_answers.option_default(section, option)
                assert default != "<missing>", f"{name}: [{section}] {option} is not an Airflow 3.3.2 option"
            elif key.startswith("AIRFLOW_CONN_"):
                continue
            else:
                assert key in THIRD_PARTY_ENV, f"{name}: unknown variable {key}"


def test_connections_parse_and_match_the_hooks(compose: dict[str, Any]) -> None:
    from airflow.models.connection import Connection
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
    from nuro_ml.hooks.feast import FeastHook
    from nuro_ml.hooks.kuberay import KubeRayHook
    from nuro_ml.hooks.ray import RayHook
    from nuro_ml.hooks.slurm import SlurmHook
    from nuro_ml.hooks.terraform import TerraformHook
    from nuro_ml.metrics.endpoint import METRICS_CONN_ID

    hooks = {
        h.default_conn_name: h
        for h in (SparkSubmitHook, FeastHook, KubeRayHook, RayHook, SlurmHook, TerraformHook)
    }
    seen = set()
    for service in our_services(compose).values():
        for key, value in environment(service).items():
            if not key.startswith("AIRFLOW_CONN_"):
                continue
            conn_id = key.removeprefix("AIRFLOW_CONN_").lower()
            if conn_id == METRICS_CONN_ID:  # no hook: only its password, the metrics scrape token
                assert Connection.from_json(value, conn_id=conn_id).password
                continue
            assert conn_id in hooks, f"{conn_id} is no hook's default connection"
            conn = Connection.from_json(value, conn_id=conn_id)
            assert conn.conn_type == hooks[conn_id].conn_type
            seen.add(conn_id)
    assert {"ray_default", "spark_default"} <= seen


def test_airflow_reaches_the_ray_head_and_spark_master(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
    from nuro_ml.hooks.ray import RayHook

    env = environment(compose["services"]["airflow-worker"])
    monkeypatch.setenv("AIRFLOW_CONN_RAY_DEFAULT", env["AIRFLOW_CONN_RAY_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", env["AIRFLOW_CONN_SPARK_DEFAULT"])
    ray_head = compose["services"]["ray-head"]["command"]
    assert RayHook(ray_conn_id="ray_default").address == "http://ray-head:{}".format(
        next(p.split("=")[1] for p in ray_head if p.startswith("--dashboard-port="))
    )
    master = compose["services"]["spark-worker"]["command"][-1]
    spark = SparkSubmitHook(conn_id="spark_default")
    assert spark._connection["master"] == master
    assert spark._connection["deploy_mode"] == "client"


def test_feast_and_ledger_settings_are_valid(compose: dict[str, Any]) -> None:
    postgres = environment(compose["services"]["postgres"])
    init_sql = (DOCKER_DIR / "postgres" / "init-databases.sql").read_text()
    created = dict(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+);", init_sql))
    created[postgres["POSTGRES_DB"]] = postgres["POSTGRES_USER"]
    for name, service in our_services(compose).items():
        env = environment(service)
        feast = FeastSettings.from_env(env)
        assert feast.online_store == "redis", name
        urls = [env["NURO_ML_LEDGER_URL"], feast.registry_url, feast.cache_url]
        if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in env:
            urls.append(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        for raw in urls:
            url = make_url(str(raw))
            assert url.host == "postgres" and url.database in created, (
                f"{name}: {url.database} is never created"
            )
            assert (url.username, url.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
            assert created[url.database] == url.username
            url.get_dialect()  # the driver named in the URL is installed
        assert make_url(env["NURO_ML_LEDGER_URL"]).get_backend_name() in SUPPORTED_DIALECTS


def test_celery_executor_with_redis_broker_and_postgres_results(compose: dict[str, Any]) -> None:
    env = environment(compose["services"]["airflow-scheduler"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
    backend = env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert (
        backend.startswith("db+") and make_url(backend.removeprefix("db+")).get_backend_name() == "postgresql"
    )
    # The executor's provider is a locked dependency, so the image and this machine both have it.
    deps = [re.split(r"[<>=!~ ;\[]", d)[0] for d in pyproject()["project"]["dependencies"]]
    assert "apache-airflow-providers-celery" in deps
    # Feast's online store and the broker share the server but not the database number.
    feast_db = re.search(r"db=(\d+)", env["NURO_ML_FEAST_REDIS_CONNECTION_STRING"])
    broker_db = env["AIRFLOW__CELERY__BROKER_URL"].rsplit("/", 1)[1]
    assert feast_db is not None and feast_db.group(1) != broker_db


def _listening_ports(name: str, service: dict[str, Any], airflow_answers: Any) -> set[int]:
    """Ports the service's process opens, from its command line and the programs' defaults."""
    command = [str(part) for part in service.get("command") or []]
    ports: set[int] = set()
    for i, part in enumerate(command):
        flag, _, inline = part.partition("=")
        if flag in ("--port", "--webui-port", "--dashboard-port"):
            ports.add(int(inline or command[i + 1]))
        if flag == "--web.listen-address":  # Prometheus and the Pushgateway
            ports.add(int((inline or command[i + 1]).rpartition(":")[2]))
    image = str(service.get("image"))
    if image.startswith("postgres:"):
        ports.add(5432)
    if image.startswith("redis:"):
        ports.add(6379)
    if command[:2] == ["airflow", "scheduler"]:
        ports.add(int(airflow_answers.option_default("scheduler", "scheduler_health_check_server_port")))
    if command[:2] == ["airflow", "triggerer"]:
        ports.add(int(airflow_answers.option_default("logging", "trigger_log_server_port")))
    if command[:3] == ["airflow", "celery", "worker"]:
        ports.add(int(airflow_answers.option_default("logging", "worker_log_server_port")))
    if "org.apache.spark.deploy.master.Master" in command and "--webui-port" not in command:
        ports.add(8080)
    return ports


_HOST_PORT = re.compile(r"(?<![\w.-])([a-z][a-z0-9-]*):(\d{2,5})(?!\d)")


def test_ports_are_consistent_between_services(compose: dict[str, Any], airflow_answers: Any) -> None:
    services = compose["services"]
    listening = {name: _listening_ports(name, s, airflow_answers) for name, s in services.items()}
    for name, service in services.items():
        declared = container_ports(service)
        assert declared <= listening[name], (
            f"{name} declares ports {declared - listening[name]} nothing opens"
        )
        texts = list(strings_in(service.get("environment"))) + list(strings_in(service.get("command")))
        for text in texts:
            if text.startswith("{"):
                conn = json.loads(text)
                host = str(conn.get("host", "")).split("://")[-1]
                if host in services and conn.get("port"):
                    assert int(conn["port"]) in container_ports(services[host]), f"{name}: {text}"
            for host, port in _HOST_PORT.findall(text):
                if host in services:
                    assert int(port) in container_ports(services[host]), f"{name}: {host}:{port} not exposed"
        for word in healthcheck_argv(service) or []:
            for host, port in _HOST_PORT.findall(word):
                target = name if host == "localhost" else host
                if target in services:
                    assert int(port) in listening[target], f"{name} healthcheck probes {host}:{port}"
    published = [p for s in services.values() for p in published_ports(s)]
    assert len(published) == len(set(published)), f"host ports published twice: {published}"


def test_tasks_report_to_the_api_server(compose: dict[str, Any]) -> None:
    api = compose["services"]["airflow-apiserver"]
    port = int(api["command"][api["command"].index("--port") + 1])
    for name, service in compose["services"].items():
        url = environment(service).get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL")
        if url is not None:
            assert url == f"http://airflow-apiserver:{port}/execution/", name


def test_scheduler_health_server_is_enabled(compose: dict[str, Any]) -> None:
    env = environment(compose["services"]["airflow-scheduler"])
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"
