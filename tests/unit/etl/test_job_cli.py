"""The ETL job and operator on bad input: exit code, a message naming it, no traceback."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from nuro_ml.etl import job
from nuro_ml.exceptions import ETLError, ETLInputNotFoundError, NoLogsInIntervalError
from nuro_ml.operators.spark import MCAPToParquetOperator


def _args(root, **over):
    base = {
        "--input": str(root / "raw"),
        "--output": str(root / "out"),
        "--start": "2025-11-24",
        "--end": "2025-11-25",
    }
    base.update(over)
    return [x for k, v in base.items() if v is not None for x in ((k, v) if v != "" else (k,))]


CASES = [
    # (name, argument overrides, exit code, words the message must contain)
    (
        "missing input",
        {"--input": "/nonexistent/raw"},
        2,
        ["argument --input", "/nonexistent/raw does not exist"],
    ),
    (
        "bad month",
        {"--start": "2025-13-01"},
        2,
        ["argument --start", "'2025-13-01'", "ISO 8601", "2025-11-24"],
    ),
    ("not a date", {"--end": "tomorrow"}, 2, ["argument --end", "'tomorrow'", "ISO 8601"]),
    ("end before start", {"--end": "2025-11-20"}, 2, ["argument --end", "empty interval", "not after start"]),
    ("missing output", {"--output": None}, 2, ["required", "--output"]),
    ("share out of range", {"--max-bad-file-share": "2"}, 2, ["--max-bad-file-share", "between 0 and 1"]),
    ("share not a number", {"--max-bad-file-share": "x"}, 2, ["--max-bad-file-share", "invalid float value"]),
    (
        "bad mapping",
        {"--mapping": "MAPPING"},
        2,
        ["argument --mapping", "fleet.yaml:2:1", "unknown field 'tabels'"],
    ),
    ("no logs", {}, 1, ["no drive logs for the interval 2025-11-24 .. 2025-11-25", "RAW", "--allow-empty"]),
    ("no logs allowed", {"--allow-empty": ""}, 0, ['"skipped": "no drive logs for the interval', "RAW"]),
]


@pytest.mark.parametrize(("name", "over", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_job_command_line_errors(tmp_path, capsys, name, over, code, words):
    (tmp_path / "raw" / "date=2025-11-23" / "vehicle=v1").mkdir(parents=True)
    mapping_file = tmp_path / "fleet.yaml"
    mapping_file.write_text("version: 1\ntabels: {}\n")
    over = {k: (str(mapping_file) if v == "MAPPING" else v) for k, v in over.items()}
    try:
        rc = job.main(_args(tmp_path, **over))
    except SystemExit as exit_:
        rc = exit_.code
    out = capsys.readouterr()
    text = out.out + out.err
    assert rc == code, text
    for word in words:
        assert word.replace("RAW", str(tmp_path / "raw")) in text, (word, text)
    assert "Traceback" not in text


def test_job_process_prints_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "nuro_ml.etl.job", *_args(tmp_path, **{"--start": "2025-13-01"})],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "argument --start: '2025-13-01' is not a date or time (month must be in 1..12)" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def _context():
    return {"ti": SimpleNamespace(dag_id="d", run_id="r", task_id="etl", map_index=-1)}


def test_operator_fails_clearly_and_skips_when_allowed(tmp_path):
    from airflow.sdk.exceptions import AirflowSkipException

    kwargs = {"input_path": str(tmp_path / "raw"), "output_path": str(tmp_path / "out")}
    bad_date = MCAPToParquetOperator(task_id="etl", start="2025-13-01", end="2025-11-25", **kwargs)
    with pytest.raises(ETLError, match=r"etl: start: '2025-13-01' is not a date"):
        bad_date.execute(_context())
    missing = MCAPToParquetOperator(task_id="etl", start="2025-11-24", end="2025-11-25", **kwargs)
    with pytest.raises(ETLError, match=r"input_path: .*raw does not exist"):
        missing.execute(_context())
    (tmp_path / "raw").mkdir()
    with pytest.raises(
        NoLogsInIntervalError, match=r"no drive logs for the interval 2025-11-24 \.\. 2025-11-25"
    ):
        missing.execute(_context())
    allowed = MCAPToParquetOperator(
        task_id="etl", start="2025-11-24", end="2025-11-25", allow_empty=True, **kwargs
    )
    with pytest.raises(AirflowSkipException, match="no drive logs"):
        allowed.execute(_context())
    cfg = job.ETLJobConfig(str(tmp_path / "gone"), str(tmp_path / "out"), "2025-11-24", "2025-11-25", "q")
    with pytest.raises(ETLInputNotFoundError, match="gone does not exist"):
        job.run_etl(lambda: None, cfg)  # type: ignore[arg-type,return-value]
