"""Running ``nuro-ml`` in-process against a private ledger and data folder."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import airflow.sdk  # noqa: F401 - Airflow logs its configuration once on import, outside the captured output
import pytest
from nuro_ml.cli import main


@dataclass(frozen=True)
class Outcome:
    """What a user sees after one ``nuro-ml`` command."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if ": error: " in line]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data folder and SQLite ledger of the module's own, so no other test sees what it writes."""
    home = tmp_path_factory.mktemp("cli-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NURO_ML_DATA_DIR", str(home / "data"))
        patch.setenv("NURO_ML_LEDGER_URL", f"sqlite:///{home / 'ledger.db'}")
        patch.setenv("NURO_ML_PIPELINE_CACHE_DIR", str(home / "spec-cache"))
        yield home
