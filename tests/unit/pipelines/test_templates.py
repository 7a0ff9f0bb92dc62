"""Jinja templates in stage arguments are compiled, without rendering, by validate and the loader."""

from __future__ import annotations

import jinja2
from hypothesis import given, settings
from hypothesis import strategies as st
from nuro_ml.cli import main
from nuro_ml.pipelines.loader import compile_folder
from nuro_ml.pipelines.templates import template_env, template_error

SPEC = """\
dag_id: {dag_id}
start_date: 2026-11-01
stages:
  etl:
    operator: bash
    args:
      bash_command: {command}
"""


def test_unclosed_expression_is_reported_at_its_line_and_column(write_spec, capsys):
    path = write_spec(SPEC.format(dag_id="a", command='"echo {{ dag_run.run_after }"'))

    assert main(["validate", "--no-serialize", str(path)]) == 1
    out, _ = capsys.readouterr()
    assert out.splitlines() == [
        f"{path}:7:21: stages.etl.args.bash_command: Jinja template does not compile: unexpected '}}'; "
        "the task would fail when Airflow renders it"
    ]


def test_error_inside_a_block_string_points_at_its_line(write_spec, capsys):
    command = "|\n        echo start\n        echo {{ ds }}\n        echo {{ ds | upper }"
    path = write_spec(SPEC.format(dag_id="b", command=command))

    assert main(["validate", "--no-serialize", str(path)]) == 1
    out, _ = capsys.readouterr()
    assert out.startswith(f"{path}:10:9: stages.etl.args.bash_command: Jinja template does not compile")


def test_unknown_filter_suggests_airflows_own(write_spec, capsys):
    path = write_spec(SPEC.format(dag_id="c", command='"echo {{ ds | ds_nodsh }}"'))

    assert main(["validate", "--no-serialize", str(path)]) == 1
    out, _ = capsys.readouterr()
    assert out.strip() == (
        f"{path}:7:21: stages.etl.args.bash_command: Jinja template uses an unknown filter 'ds_nodsh' "
        "(did you mean 'ds_nodash'?)"
    )


def test_templates_are_compiled_not_rendered(write_spec, capsys):
    # Undefined names and macros are fine: they only exist when the task runs.
    path = write_spec(
        SPEC.format(dag_id="d", command='"echo {{ params.nope }} {{ macros.ds_add(ds, 1) | ds_nodash }}"')
    )

    assert main(["validate", "--no-serialize", str(path)]) == 0


def test_loader_leaves_out_only_the_spec_with_a_broken_template(write_spec, tmp_path):
    folder = tmp_path / "pipelines"
    write_spec(SPEC.format(dag_id="good", command='"echo {{ ds }}"'), name="good.yaml", folder=folder)
    write_spec(SPEC.format(dag_id="bad", command='"{% if ds %}x"'), name="bad.yaml", folder=folder)

    loaded = compile_folder(folder)

    assert list(loaded.dags) == ["pipeline:good"]
    [issue] = loaded.broken["pipelines/bad.yaml"]
    assert (issue.line, issue.column, issue.field) == (7, 21, "stages.etl.args.bash_command")
    assert "Jinja template does not compile: Unexpected end of template" in issue.message


PIECES = [
    "{{", "}}", "{%", "%}", "{#", "#}", " if x ", " endif ", " for i in y ", " endfor ", " ds ", "|",
    " upper ", " nofilter ", " is ", " defined ", " nosuchtest ", "(", ")", "'", "\n", "x", "}",
]  # fmt: skip


@settings(max_examples=150, deadline=None, database=None)
@given(
    text=st.lists(st.sampled_from(PIECES), max_size=12).map("".join),
    native=st.booleans(),
)
def test_check_agrees_with_compiling_in_airflows_environment(text: str, native: bool) -> None:
    # The check parses instead of compiling (five times cheaper); both must accept the same templates.
    env = template_env(native)
    try:
        env.from_string(text)
        compiles = True
    except jinja2.TemplateSyntaxError:
        compiles = False
    assert (template_error(text, native) is None) == compiles
