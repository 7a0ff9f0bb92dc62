"""Alert rules and the dashboard in deploy/observability: valid for promtool, firing as meant,
and naming only series the platform exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from nuro_ml.metrics import catalogue as cat
from nuro_ml.settings import REPO_ROOT

OBSERVABILITY = REPO_ROOT / "deploy" / "observability"
RULES_DIR = OBSERVABILITY / "prometheus" / "rules"
RULES = RULES_DIR / "nuro-ml.rules.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "nuro-ml-platform.json"
SERIES = re.compile(r"\bnuro_ml_[a-z0-9_]+")


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: install the Debian package prometheus (.ci/run does)"
    return path


def exported_names() -> set[str]:
    names: set[str] = set()
    for series in cat.SCRAPED + cat.PUSHED:
        if series.kind == "counter":
            names.add(f"{series.name}_total")
        elif series.kind == "histogram":
            names.update(f"{series.name}_{suffix}" for suffix in ("bucket", "count", "sum"))
        else:
            names.add(series.name)
    return names


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_fire_the_lease_wait_and_backend_alerts() -> None:
    tests = RULES_DIR / "nuro-ml.rules.test.yml"
    fired = {
        a["alertname"]
        for t in yaml.safe_load(tests.read_text())["tests"]
        for a in t["alert_rule_test"]
        if a["exp_alerts"]
    }
    assert {
        "NuroMLLeaseHeldPastExpiry",
        "NuroMLAdmissionWaitHigh",
        "NuroMLCapacityBackendUnreachable",
    } <= fired
    result = subprocess.run(
        [promtool(), "test", "rules", tests.name], cwd=RULES_DIR, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_queries_name_only_exported_series(source: str) -> None:
    if source == "rules":
        groups = yaml.safe_load(RULES.read_text())["groups"]
        texts = [r["expr"] for g in groups for r in g["rules"]]
    else:
        texts = dashboard_queries()
    used = {name for text in texts for name in SERIES.findall(text)}
    assert used <= exported_names(), used - exported_names()


def test_dashboard_covers_capacity_reasons_cost_etl_cache_and_training() -> None:
    text = " ".join(dashboard_queries())
    for name in (
        "nuro_ml_pool_capacity_gpus",
        "nuro_ml_capacity_pending_requests",
        "nuro_ml_capacity_admission_wait_seconds_bucket",
        "nuro_ml_gpu_hours_total",
        "nuro_ml_gpu_cost_usd_total",
        "nuro_ml_etl_messages_total",
        "nuro_ml_etl_quarantined_files_total",
        "nuro_ml_feature_cache_hits_total",
        "nuro_ml_training_jobs_total",
    ):
        assert name in text, name
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


def test_compose_prometheus_mounts_this_config(tmp_path: Path) -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker" / "docker-compose.yaml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "../deploy/observability/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    config = yaml.safe_load((OBSERVABILITY / "prometheus" / "prometheus.yml").read_text())
    (tmp_path / "rules").mkdir()
    config["rule_files"] = [str(RULES)]
    for job in config["scrape_configs"]:
        if "authorization" in job:
            token = tmp_path / "token"
            token.write_text("x")
            job["authorization"]["credentials_file"] = str(token)
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool(), "check", "config", str(checked)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["nuro-ml"]["metrics_path"] == "/nuro-ml/metrics"
    assert jobs["nuro-ml-pushgateway"]["honor_labels"] is True
