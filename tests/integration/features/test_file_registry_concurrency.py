"""Several processes materialize at once on the embedded file registry, as a backfill's runs do.

Feast's own file registry store rewrites the file in place and commits whole cached copies: a
reader meanwhile gets a ``DecodeError`` or a registry missing views, and concurrent updates drop
each other's intervals. Every run here must succeed, a reader refreshing all along must never
fail, and the registry must hold every run's interval.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from feast.infra.registry.file import FileRegistryStore
from feast.repo_config import RegistryConfig
from nuro_ml.features.registry_store import LockedFileRegistryStore
from nuro_ml.hooks.feast import FeastHook

from tests.unit.features.scene_data import days, utc, write_days

pytestmark = pytest.mark.integration

DAYS = 3
RUNS_PER_DAY = 4


def _materialize_day(index: int, runs: int, results: Any) -> None:
    hook = FeastHook(feast_conn_id=None)
    day = days(DAYS)[index]
    try:
        rows = []
        for _ in range(runs):
            # No cache: every run computes and records its interval, as a reprocessing run does.
            result = hook.materialize(
                start=utc(day), end=utc(day + timedelta(days=1)), use_cache=False
            ).to_xcom()
            rows.append((result["rows_total"], result["stale_rows_skipped"]))
        results.put(("materialized", index, rows))
    except Exception as exc:  # reported to the test, which names it
        results.put(("failed", index, f"{type(exc).__name__}: {exc}"))
    finally:
        hook.close()


def _read_registry(stop: Any, results: Any) -> None:
    store = FeastHook(feast_conn_id=None).store
    reads, errors = 0, []
    while not stop.is_set():
        try:
            store.refresh_registry()
            names = {view.name for view in store.list_feature_views()}
            if "scene_ego_motion" not in names:
                errors.append(f"views missing: {sorted(names)}")
            reads += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    results.put(("read", reads, errors[:5], len(errors)))


@pytest.fixture
def spawn() -> Iterator[multiprocessing.context.SpawnContext]:
    # Spawned, not forked: a fork of this multi-threaded process can leave a child deadlocked.
    ctx = multiprocessing.get_context("spawn")
    yield ctx
    for child in multiprocessing.active_children():
        child.kill()
        child.join(timeout=10)


def test_concurrent_materializations_keep_the_registry_whole(
    sqlite_hook: FeastHook, spawn: multiprocessing.context.SpawnContext
) -> None:
    write_days(DAYS)
    sqlite_hook.apply()
    registry_path = Path(sqlite_hook.store.config.registry.path)
    assert isinstance(sqlite_hook.store.registry._registry_store, LockedFileRegistryStore)

    results: Any = spawn.Queue()
    stop = spawn.Event()
    reader = spawn.Process(target=_read_registry, args=(stop, results), daemon=True)
    writers = [
        spawn.Process(target=_materialize_day, args=(i, RUNS_PER_DAY, results), daemon=True)
        for i in range(DAYS)
    ]
    reader.start()
    for writer in writers:
        writer.start()
    outcomes = []
    try:
        for _ in writers:
            outcomes.append(results.get(timeout=300))
    except queue_module.Empty:
        pytest.fail(f"materializations did not finish: {outcomes}")
    finally:
        stop.set()
    read = results.get(timeout=60)
    for process in (*writers, reader):
        process.join(timeout=30)

    failed = [o for o in outcomes if o[0] != "materialized"]
    assert failed == []
    # The same day's rows each time: every run wrote them all, except those a run of a later day
    # had already replaced (the latest row per vehicle), which it skipped as stale.
    for _, _, rows in outcomes:
        assert len({written + stale for written, stale in rows}) == 1, outcomes
        assert all(written > 0 for written, _ in rows), outcomes
    _, reads, errors, n_errors = read
    assert reads > 0 and n_errors == 0, errors

    # Every run's interval is recorded, none dropped by another process's commit; and Feast's own
    # file store reads the file the platform wrote.
    feast_store = FileRegistryStore(RegistryConfig(path=str(registry_path)), registry_path.parent)
    proto = feast_store.get_registry_proto()
    intervals = {
        view.spec.name: len(view.meta.materialization_intervals)
        for view in proto.feature_views
        if view.spec.name == "scene_ego_motion"
    }
    assert intervals == {"scene_ego_motion": DAYS * RUNS_PER_DAY}
