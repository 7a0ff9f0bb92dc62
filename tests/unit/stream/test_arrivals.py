"""``nuro-ml gen-logs --stream``: segments land complete, at the asked rate, in the batch layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcap.reader import make_reader
from nuro_ml.etl.arrivals import segment_spec

from tests.unit.cli.conftest import run_cli


def test_gen_logs_stream_lands_segments_at_the_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    landing = tmp_path / "landing"
    out = run_cli(
        [
            "gen-logs",
            "--stream",
            "--landing",
            str(landing),
            "--segments",
            "3",
            "--segments-per-second",
            "4",
            "--seconds",
            "1",
            "--vehicles",
            "1",
        ],
        capsys,
    )
    assert out.code == 0, out.text
    assert "3 segments landed" in out.out
    files = sorted(landing.rglob("*.mcap"))
    assert [f.relative_to(landing).as_posix() for f in files] == [
        f"date=2026-01-05/vehicle=veh-001/{segment_spec('veh-001', i).drive_id}.mcap" for i in range(3)
    ]
    for path in files:
        with open(path, "rb") as fh:
            summary = make_reader(fh).get_summary()
        assert summary is not None and summary.statistics is not None
        assert summary.statistics.message_count > 0


def test_gen_logs_stream_needs_a_destination(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(["gen-logs", "--stream", "--segments", "1"], capsys)
    assert out.code == 2
    assert "gen-logs --stream needs --landing, --redis-url or both" in out.err
