"""Quotas in fractional GPUs: parsing, the version-4 migration, admission, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nuro_ml.capacity import ledger_store, schema
from nuro_ml.capacity.engine import dispose_all
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest, LeaseState, gpu_quantity
from nuro_ml.cli import main
from nuro_ml.exceptions import CapacityError, QuotaExceededError
from sqlalchemy import create_engine, text

from tests.unit.capacity.old_schemas import V1_QUOTAS


@pytest.mark.parametrize(
    ("given", "gpus"),
    [
        (4, 4),
        ("4", 4),
        (4.0, 4),
        (2.5, 2.5),
        ("2.5", 2.5),
        ("2500m", 2.5),
        ("500m", 0.5),
        (" 3000m ", 3),
        (0, 0),
    ],
)
def test_gpu_amounts_read_as_gpus_or_milli_gpus(given: object, gpus: float) -> None:
    parsed = gpu_quantity(given, what="nominal")
    assert parsed == gpus
    assert isinstance(parsed, int) == float(gpus).is_integer()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (-1, "non-negative"),
        ("2.0005", "counted in milli-GPUs"),
        ("0.5m", "counted in milli-GPUs"),
        ("lots", "expected GPUs"),
        (True, "expected a number"),
        (float("nan"), "non-negative"),
    ],
)
def test_bad_gpu_amounts_are_refused_naming_the_field(given: object, message: str) -> None:
    with pytest.raises(CapacityError, match=f"quota 'a'/'p': nominal: .*{message}"):
        gpu_quantity(given, what="quota 'a'/'p': nominal")


def _version_3_ledger(url: str) -> None:
    """A ledger as release with schema version 3 left it: quotas in whole GPUs, a lease held."""
    engine = create_engine(url)
    with engine.begin() as conn:
        schema.metadata.create_all(conn, tables=[schema.schema_version, schema.pools])
        conn.execute(text(V1_QUOTAS))
        for migration in schema.MIGRATIONS[:3]:
            migration.apply(conn)
            conn.execute(
                text("INSERT INTO capacity_schema_version VALUES (:v, :d, '2026-01-01 00:00:00')"),
                {"v": migration.version, "d": migration.description},
            )
        conn.execute(text("INSERT INTO capacity_pools VALUES ('local', 8, NULL, '2026-01-01 00:00:00')"))
        conn.execute(
            text("INSERT INTO capacity_quotas VALUES ('perception', 'local', 4, 2, 1, '2026-01-01')")
        )
        conn.execute(
            text("INSERT INTO capacity_quotas VALUES ('planning', 'local', 3, NULL, NULL, '2026-01-01')")
        )
    engine.dispose()
    dispose_all()
    ledger_store.MIGRATED.discard(url)


def test_version_3_ledger_migrates_keeping_whole_gpu_quotas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v3.db'}"
    _version_3_ledger(url)
    ledger = QuotaLedger(url)
    assert ledger.migrate() == [4]
    quotas = {q.team: q for q in ledger.quotas("local")}
    perception, planning = quotas["perception"], quotas["planning"]
    assert (perception.nominal, perception.borrowing_limit, perception.lending_limit) == (4, 2, 1)
    assert (planning.nominal, planning.borrowing_limit, planning.lending_limit) == (3, None, None)
    assert all(isinstance(v, int) for v in (perception.nominal, perception.borrowing_limit, planning.nominal))
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT team, nominal_milli, borrowing_limit_milli, lending_limit_milli FROM capacity_quotas"
            )
        ).all()
    assert sorted(tuple(r) for r in rows) == [
        ("perception", 4000, 2000, 1000),
        ("planning", 3000, None, None),
    ]
    # Whole-GPU admission is unchanged: perception may hold 4 + 2 borrowed.
    assert ledger.try_acquire(LeaseRequest(key="a", team="perception", pool="local", gpus=5)) is not None
    with pytest.raises(QuotaExceededError, match="limit 6"):
        ledger.try_acquire(LeaseRequest(key="b", team="perception", pool="local", gpus=7))

    # A fractional quota after the migration; older releases read its whole GPUs, rounded down.
    changed = ledger.upsert_quota("planning", "local", nominal=2.5, borrowing_limit="500m")
    assert (changed.nominal, changed.borrowing_limit) == (2.5, 0.5)
    assert {q.team: q.nominal for q in QuotaLedger(url).quotas("local")}["planning"] == 2.5
    with ledger.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT nominal, nominal_milli, borrowing_limit FROM capacity_quotas WHERE team = 'planning'"
            )
        ).one()
    assert tuple(row) == (2, 2500, 0)


def test_a_quota_an_older_release_changed_reads_its_whole_gpus(tmp_path: Path) -> None:
    ledger = QuotaLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.upsert_pool("local", capacity=8)
    ledger.upsert_quota("perception", "local", nominal=2.5, lending_limit=0.5)
    with ledger.engine.begin() as conn:
        # What a release before version 4 writes: the whole-GPU columns and updated_at alone.
        conn.execute(
            text(
                "UPDATE capacity_quotas SET nominal = 2, lending_limit = 0, "
                "updated_at = '2099-01-01 00:00:00'"
            )
        )
    quota = ledger.quotas("local")[0]
    assert (quota.nominal, quota.lending_limit) == (2, 0)


def test_fractional_quota_admits_gpu_shares_up_to_its_limit(tmp_path: Path) -> None:
    ledger = QuotaLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.upsert_pool("local", capacity=4)
    ledger.upsert_quota("perception", "local", nominal=2.5, borrowing_limit=0)
    ledger.upsert_quota("planning", "local", nominal=1.5, borrowing_limit=0)

    def share(key: str, team: str = "perception", milli: int = 500) -> LeaseRequest:
        return LeaseRequest(key=key, team=team, pool="local", gpus=1, gpu_share=milli)

    assert ledger.try_acquire(LeaseRequest(key="whole", team="perception", pool="local", gpus=2)) is not None
    half = ledger.try_acquire(share("half"))
    assert half is not None and half.milli == 500 and half.borrowed == 0
    # 2.5 GPUs held: the quota is full, though the pool still has 1.5 GPUs free.
    assert ledger.try_acquire(share("more", milli=100)) is None
    assert ledger.try_acquire(share("plan", team="planning", milli=1000)) is not None
    assert ledger.try_acquire(share("plan-half", team="planning")) is not None
    with pytest.raises(QuotaExceededError, match=r"limit 2\.5 \(nominal 2\.5\)"):
        ledger.try_acquire(LeaseRequest(key="big", team="perception", pool="local", gpus=3))
    held = sum(lease.milli for lease in ledger.leases(state=LeaseState.ACTIVE))
    assert held == 4000
    ledger.release(half.lease_id)
    assert ledger.try_acquire(share("more", milli=100)) is not None


def test_cli_sets_and_shows_fractional_quotas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    base = ["quota", "--ledger-url", url]
    assert main([*base, "set-pool", "a100", "--gpus", "8"]) == 0
    assert main([*base, "set-quota", "perception", "--pool", "a100", "--nominal", "2.5"]) == 0
    assert "nominal 2.5," in capsys.readouterr().out
    assert (
        main([*base, "set-quota", "planning", "--pool", "a100", "--nominal", "4", "--lending-limit", "1500m"])
        == 0
    )
    assert "nominal 4, borrowing limit -, lending limit 1.5" in capsys.readouterr().out
    assert main([*base, "show", "--json"]) == 0
    shown = {q["team"]: q for q in json.loads(capsys.readouterr().out)["quotas"]}
    assert (shown["perception"]["nominal"], shown["planning"]["nominal"]) == (2.5, 4)
    assert shown["planning"]["lending_limit"] == 1.5

    assert main([*base, "set-quota", "perception", "--pool", "a100", "--nominal", "2.0001"]) == 2
    err = capsys.readouterr().err
    assert "argument --nominal" in err and "counted in milli-GPUs" in err and "Traceback" not in err
    assert {q.team: q.nominal for q in QuotaLedger(url).quotas("a100")}["perception"] == 2.5
