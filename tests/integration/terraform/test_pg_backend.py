"""Shared state in PostgreSQL: concurrent applies on one workspace serialise on the state lock."""

from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest
from nuro_ml.exceptions import TerraformStateLockedError
from nuro_ml.hooks.terraform import ApplyResult, TerraformHook

pytestmark = pytest.mark.integration

CONFIG = """
resource "null_resource" "shared" {
  provisioner "local-exec" {
    command = "sleep 3"
  }
}
"""


@pytest.fixture
def pg_env(postgres, tf_config, monkeypatch):
    """A pg-backend configuration, a fresh database and an Airflow connection pointing at it."""
    database = f"tfstate_{uuid.uuid4().hex[:8]}"
    postgres.create_database(database)
    conn_id = f"tf_state_{database}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": postgres.host,
                "port": postgres.port,
                "login": postgres.user,
                "password": postgres.password,
                "schema": database,
            }
        ),
    )
    directory = tf_config(CONFIG, backend="pg")
    dsn = (
        f"host={postgres.host} port={postgres.port} user={postgres.user} password={postgres.password} "
        f"dbname={database}"
    )
    return directory, conn_id, dsn


def stored_state(dsn: str, schema: str, workspace: str) -> dict:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f'SELECT data FROM "{schema}".states WHERE name = %s', (workspace,)).fetchall()
    assert len(rows) == 1, f"expected one state row for workspace {workspace}, found {len(rows)}"
    return json.loads(rows[0][0])


def run_concurrently(hooks: list[TerraformHook]) -> list[ApplyResult | BaseException]:
    for hook in hooks:
        hook.prepare()
    barrier = threading.Barrier(len(hooks))
    results: list[ApplyResult | BaseException] = [RuntimeError("not run")] * len(hooks)

    def apply(index: int) -> None:
        barrier.wait()
        try:
            results[index] = hooks[index].apply()
        except BaseException as err:
            results[index] = err

    threads = [threading.Thread(target=apply, args=(i,)) for i in range(len(hooks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for hook in hooks:
        hook.close()
    return results


def test_second_apply_waits_for_the_lock_and_creates_nothing_twice(pg_env):
    directory, conn_id, dsn = pg_env
    hooks = [
        TerraformHook(working_dir=directory, backend_conn_id=conn_id, workspace="team-a", lock_timeout="120s")
        for _ in range(2)
    ]
    schema = hooks[0].backend_settings["schema_name"]

    results = run_concurrently(hooks)

    assert all(isinstance(r, ApplyResult) for r in results), results
    assert sorted(r.added for r in results if isinstance(r, ApplyResult)) == [0, 1]
    state = stored_state(dsn, schema, "team-a")
    assert [(r["type"], r["name"], len(r["instances"])) for r in state["resources"]] == [
        ("null_resource", "shared", 1)
    ]
    with TerraformHook(working_dir=directory, backend_conn_id=conn_id, workspace="team-a") as reader:
        version = reader.state_version()
    assert (version.lineage, version.serial) == (state["lineage"], state["serial"])


def test_second_apply_without_lock_timeout_fails_with_a_lock_error(pg_env):
    directory, conn_id, dsn = pg_env
    hooks = [
        TerraformHook(working_dir=directory, backend_conn_id=conn_id, lock_timeout="0s") for _ in range(2)
    ]
    schema = hooks[0].backend_settings["schema_name"]

    results = run_concurrently(hooks)

    applied = [r for r in results if isinstance(r, ApplyResult)]
    refused = [r for r in results if isinstance(r, TerraformStateLockedError)]
    assert len(applied) == 1 and len(refused) == 1, results
    assert applied[0].added == 1
    message = str(refused[0])
    assert "Error acquiring the state lock" in message
    assert str(directory) in message
    state = stored_state(dsn, schema, "default")
    assert [r["name"] for r in state["resources"]] == ["shared"]
