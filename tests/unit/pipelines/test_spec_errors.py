"""A broken spec is reported as file:line:col: field: message, saying what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
from nuro_ml.pipelines.loader import check_file, compile_file

HEADER = """\
dag_id: demo
start_date: 2026-11-01
"""


def issues_of(path: Path) -> list[tuple[int, int, str, str]]:
    _, issues = compile_file(path)
    return [(issue.line, issue.column, issue.field, issue.message) for issue in issues]


@pytest.mark.parametrize(
    ("body", "line", "column", "field", "fragments"),
    [
        pytest.param(
            "stages:\n  a:\n    operator: bash\n    argz: {bash_command: x}\n",
            6,
            5,
            "stages.a.argz",
            ["unknown field 'argz'", "did you mean 'args'?", "expected one of: operator"],
            id="unknown-field",
        ),
        pytest.param(
            "catchupp: true\nstages:\n  a: {operator: empty}\n",
            3,
            1,
            "catchupp",
            ["unknown field 'catchupp'", "did you mean 'catchup'?"],
            id="unknown-top-level-field",
        ),
        pytest.param(
            "default_retries: three\nstages:\n  a: {operator: empty}\n",
            3,
            18,
            "default_retries",
            ["expected an integer", "got 'three'"],
            id="wrong-type",
        ),
        pytest.param(
            "schedule: 5\nstages:\n  a: {operator: empty}\n",
            3,
            11,
            "schedule",
            ["expected a string or a mapping", "got 5"],
            id="union-wrong-type",
        ),
        pytest.param(
            "schedule: {assets: scene_stats}\nstages:\n  a: {operator: empty}\n",
            3,
            20,
            "schedule.assets",
            ["expected a list"],
            id="union-branch-reported-where-it-failed",
        ),
        pytest.param(
            "stages:\n  a:\n    kind: trian\n    operator: empty\n",
            5,
            11,
            "stages.a.kind",
            ["expected one of 'provision', 'etl'", "got 'trian'"],
            id="wrong-literal",
        ),
        pytest.param(
            "stages:\n  a:\n    depends_on: []\n",
            4,
            3,
            "stages.a.operator",
            ["required field 'operator' is missing"],
            id="missing-field",
        ),
        pytest.param(
            "stages:\n  a:\n    operator: bash\n    args:\n      bash_comand: echo hi\n",
            7,
            7,
            "stages.a.args.bash_comand",
            ["unknown parameter 'bash_comand' for BashOperator", "did you mean 'bash_command'?"],
            id="unknown-operator-parameter",
        ),
        pytest.param(
            "stages:\n  a:\n    operator: bash\n",
            4,
            3,
            "stages.a.args",
            ["BashOperator requires argument 'bash_command'"],
            id="missing-operator-argument",
        ),
        pytest.param(
            "stages:\n  a:\n    operator: bash\n    args: {bash_command: echo, env: [1, 2]}\n",
            6,
            37,
            "stages.a.args.env",
            ["BashOperator.env expects", "got [1, 2]"],
            id="operator-argument-of-wrong-type",
        ),
        pytest.param(
            "stages:\n  a:\n    operator: bash\n    args: {bash_command: echo, task_id: other}\n",
            6,
            32,
            "stages.a.args.task_id",
            ["'task_id' cannot be set in args", "stage's name is its task id"],
            id="reserved-argument",
        ),
        pytest.param(
            "stages:\n  a:\n    operator: empyt\n",
            5,
            15,
            "stages.a.operator",
            ["unknown operator 'empyt'", "did you mean 'empty'?"],
            id="unknown-operator",
        ),
        pytest.param(
            "stages:\n  a:\n    operator: no_such_pkg.mod.ThingOperator\n",
            5,
            15,
            "stages.a.operator",
            ["cannot be imported", "No module named 'no_such_pkg'"],
            id="operator-not-importable",
        ),
        pytest.param(
            "stages:\n  a:\n    operator: empty\n    depends_on: [b]\n  b:\n    operator: empty\n"
            "    depends_on: [c]\n  c:\n    operator: empty\n    depends_on: [a]\n",
            12,
            5,
            "stages.c.depends_on",
            ["dependency cycle: c -> b -> a -> c"],
            id="cycle",
        ),
        pytest.param(
            "stages:\n  a:\n    operator: empty\n    depends_on: [a]\n",
            6,
            18,
            "stages.a.depends_on[0]",
            ["stage 'a' cannot refer to itself"],
            id="self-dependency",
        ),
        pytest.param(
            "stages:\n  extract:\n    operator: empty\n  load:\n    operator: empty\n"
            "    depends_on: [extrac]\n",
            8,
            18,
            "stages.load.depends_on[0]",
            ["unknown stage 'extrac'", "did you mean 'extract'?"],
            id="unknown-stage-reference",
        ),
        pytest.param(
            "stages:\n  a:\n    operator: empty\n    produces: [scenes]\n",
            6,
            16,
            "stages.a.produces[0]",
            ["unknown asset 'scenes'", "declare it under `assets`"],
            id="undeclared-asset",
        ),
        pytest.param(
            "params:\n  gpus: {type: integer, default: many}\nstages:\n  a: {operator: empty}\n",
            4,
            34,
            "params.gpus.default",
            ["default does not fit the parameter", "'many' is not of type 'integer'"],
            id="param-default-of-wrong-type",
        ),
        pytest.param(
            'schedule: "@daily"\nparams:\n  gpus: {type: integer}\nstages:\n  a: {operator: empty}\n',
            5,
            3,
            "params.gpus",
            ["has no default, but scheduled runs need one"],
            id="required-param-on-scheduled-dag",
        ),
        pytest.param(
            "params:\n  gpus: {type: integer, default: 1, pattern: '^x'}\nstages:\n  a: {operator: empty}\n",
            4,
            9,
            "params.gpus",
            ["pattern/format only apply to string parameters"],
            id="param-keyword-for-other-type",
        ),
        pytest.param(
            "stages:\n  a: {operator: empty}\n  b:\n    operator: empty\n    teardown: true\n",
            5,
            3,
            "stages.b",
            ["a teardown stage needs `setups`"],
            id="teardown-without-setups",
        ),
        pytest.param(
            "stages:\n  a: {operator: empty}\n  b:\n    operator: empty\n    setups: [a]\n",
            7,
            5,
            "stages.b.setups",
            ["setups only apply to teardown stages"],
            id="setups-on-normal-stage",
        ),
        pytest.param(
            "stages:\n  train: {operator: empty, kind: train}\n  etl:\n    operator: empty\n    kind: etl\n"
            "    depends_on: [train]\n",
            8,
            18,
            "stages.etl.depends_on[0]",
            ["cannot depend on 'train' (train), a later phase"],
            id="phase-order",
        ),
        pytest.param(
            "stages:\n  a:\n    operator: bash\n    args: {bash_command: 'ls ${etl_ouput_dir}'}\n",
            6,
            26,
            "stages.a.args.bash_command",
            ["unknown placeholder ${etl_ouput_dir}", "did you mean 'etl_output_dir'?"],
            id="unknown-placeholder",
        ),
        pytest.param(
            "stages:\n  a:\n    operator: bash\n"
            "    args: {bash_command: echo, output_encoding: '{{ params.enc }}'}\n",
            6,
            49,
            "stages.a.args.output_encoding",
            ["BashOperator.output_encoding is not a templated field"],
            id="template-in-untemplated-field",
        ),
        pytest.param(
            'schedule: "every day"\nstages:\n  a: {operator: empty}\n',
            3,
            11,
            "schedule",
            ["invalid schedule 'every day'"],
            id="invalid-cron",
        ),
        pytest.param(
            "timezone: Mars/Olympus\nstages:\n  a: {operator: empty}\n",
            3,
            11,
            "timezone",
            ["unknown time zone 'Mars/Olympus'"],
            id="unknown-timezone",
        ),
    ],
)
def test_problem_is_reported_at_its_line_column_and_field(write_spec, body, line, column, field, fragments):
    path = write_spec(HEADER + body)

    reported = issues_of(path)

    assert len(reported) == 1, reported
    got_line, got_column, got_field, message = reported[0]
    assert (got_line, got_column, got_field) == (line, column, field), reported[0]
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        pytest.param(
            "dag_id: [demo\nstages: {}\n", 2, 7, "did not find expected ',' or ']'", id="unclosed-flow"
        ),
        pytest.param(
            "dag_id: demo\nstages:\n  a:\n    operator: empty\n   args: {}\n",
            5,
            4,
            "while parsing a block mapping started at line 3, column 3",
            id="bad-indentation",
        ),
        pytest.param(
            "dag_id: demo\ndag_id: other\n", 2, 1, "found duplicate key 'dag_id'", id="duplicate-key"
        ),
    ],
)
def test_yaml_syntax_errors_point_at_the_offending_text(write_spec, text, line, column, fragment):
    path = write_spec(text)

    [(got_line, got_column, field, message)] = issues_of(path)

    assert (got_line, got_column, field) == (line, column, "(yaml)")
    assert message.startswith("invalid YAML: ")
    assert fragment in message


def test_every_problem_of_a_file_is_reported_in_one_pass(write_spec):
    path = write_spec(
        HEADER
        + """\
stages:
  a:
    operator: bash
    depends_on: [missing]
    args: {bash_command: echo, colour: red}
  b:
    operator: nope
"""
    )

    fields = [field for _, _, field, _ in issues_of(path)]

    assert sorted(fields) == ["stages.a.args.colour", "stages.a.depends_on[0]", "stages.b.operator"]


def test_issue_formats_as_file_line_column_field_message(write_spec):
    path = write_spec(HEADER + "stages:\n  a:\n    operator: empty\n    retries: -1\n")

    [issue] = check_file(path).issues

    assert issue.format() == f"{path}:6:14: stages.a.retries: input should be greater than or equal to 0"


def test_a_document_that_is_not_a_mapping_is_rejected(write_spec):
    path = write_spec("- just\n- a list\n")

    assert issues_of(path) == [
        (1, 1, "(document)", "a pipeline spec is a mapping of fields (dag_id, stages, ...), got a list")
    ]


def test_an_empty_file_is_rejected(write_spec):
    path = write_spec("")

    [(_, _, field, message)] = issues_of(path)

    assert field == "(document)"
    assert "got an empty file" in message
