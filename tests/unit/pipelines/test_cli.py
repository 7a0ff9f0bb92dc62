"""``nuro-ml validate``: exit status and file:line:col: field: message output."""

from __future__ import annotations

import airflow.sdk  # noqa: F401 - Airflow logs its configuration once on import, outside the captured output
from nuro_ml.cli import main

VALID = """\
dag_id: ok
start_date: 2026-11-01
stages:
  a: {operator: bash, args: {bash_command: "echo ok"}}
"""


def test_valid_specs_exit_zero(write_spec, tmp_path, capsys):
    write_spec(VALID, name="ok.yaml")
    write_spec(VALID.replace("dag_id: ok", "dag_id: ok2"), name="ok2.yml")

    assert main(["validate", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "2 spec file(s) checked, 0 invalid" in err


def test_problems_print_one_per_line_and_exit_one(write_spec, capsys):
    good = write_spec(VALID, name="ok.yaml")
    bad = write_spec(
        VALID.replace("bash_command", "bash_cmd").replace("dag_id: ok", "dag_id: bad"), name="bad.yaml"
    )

    assert main(["validate", str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{bad}:4:30: stages.a.args.bash_cmd: unknown parameter 'bash_cmd' for BashOperator (did you "
        "mean 'bash_command'?); its parameters: bash_command, env, append_env, output_encoding, "
        "skip_on_exit_code, cwd, output_processor (plus BaseOperator arguments such as pool, queue, "
        "trigger_rule, execution_timeout)"
    ]
    assert "2 spec file(s) checked, 1 invalid" in err


def test_duplicate_dag_ids_across_files_are_reported(write_spec, tmp_path, capsys):
    write_spec(VALID, name="a.yaml")
    second = write_spec(VALID, name="b.yaml")

    assert main(["validate", str(tmp_path)]) == 1
    out, _ = capsys.readouterr()
    assert out.strip() == f"{second}:1:9: dag_id: dag_id 'ok' is already defined by {tmp_path / 'a.yaml'}"


def test_missing_paths_are_errors(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    out, _ = capsys.readouterr()
    assert out.strip() == f"{tmp_path / 'nope.yaml'}:1:1: (file): no such file or folder"


def test_list_operators_names_the_provider_operators(capsys):
    assert main(["validate", "--list-operators"]) == 0
    out, _ = capsys.readouterr()
    assert "ray_job" in out and "nuro_ml.operators.ray.RayJobOperator" in out
