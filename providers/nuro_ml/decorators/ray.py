"""``@task.ray``: run a Python function as a Ray job on the cluster of a Ray connection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory

from nuro_ml.decorators.payload import PAYLOAD_ENV, bootstrap_command, encode_payload, return_value
from nuro_ml.operators.ray import RESULT_MARKER, RayJobOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from nuro_ml.hooks.ray import RayJobInfo


class _RayDecoratedOperator(DecoratedOperator, RayJobOperator):
    """A :class:`~nuro_ml.operators.ray.RayJobOperator` whose job calls the decorated function."""

    custom_operator_name = "@task.ray"
    template_fields: Sequence[str] = tuple(
        {"op_args", "op_kwargs", *RayJobOperator.template_fields} - {"entrypoint"}
    )
    # The callable is never mutated, and deep-copying a function is not always possible.
    shallow_copy_attrs: Sequence[str] = ("python_callable",)

    def __init__(self, *, python: str = "python", **kwargs: Any) -> None:
        self.python = python
        self._payload: str | None = None
        super().__init__(entrypoint=bootstrap_command(python, RESULT_MARKER), **kwargs)

    def execute(self, context: Context) -> Any:
        # Arguments are final only now: XComArgs resolved, templates rendered.
        self._payload = encode_payload(
            source=self.get_python_source(),
            function_name=self.python_callable.__name__,
            args=self.op_args,
            kwargs=self.op_kwargs,
        )
        return super().execute(context)

    def build_runtime_env(self, *, submission_id: str, run_key: str) -> tuple[dict[str, Any], set[str]]:
        runtime_env, hidden = super().build_runtime_env(submission_id=submission_id, run_key=run_key)
        if self._payload is None:
            raise RuntimeError("the payload is built in execute() before any submission")
        runtime_env["env_vars"][PAYLOAD_ENV] = self._payload
        # Not a secret, but kilobytes of base64 that would drown the submission log line.
        return runtime_env, hidden | {PAYLOAD_ENV}

    def _finish(self, info: RayJobInfo, logs: str) -> Any:
        return return_value(super()._finish(info, logs), f"Ray job {info.submission_id}")


def ray_task(
    python_callable: Callable[..., Any] | None = None,
    multiple_outputs: bool | None = None,
    **kwargs: Any,
) -> TaskDecorator:
    """
    Run the decorated function as a Ray job on a Ray cluster, through the Ray Jobs API.

    Everything :class:`~nuro_ml.operators.ray.RayJobOperator` accepts is accepted here
    (``ray_conn_id``, ``address``, ``runtime_env``, ``entrypoint_num_gpus``, ``deferrable``...),
    except ``entrypoint``: the job runs the function. It is re-attached on retry, its log streams
    into the task log, and killing the task stops it.

    The function is shipped as source, so it must be self-contained: imports inside its body, no
    closures over local variables. Arguments and the return value travel as JSON through XCom;
    function source and arguments may take at most 96 KiB once compressed, the return value at
    most 1 MiB of JSON (see :mod:`nuro_ml.decorators.payload`). An exception in the function fails
    the task with the job's traceback.

    .. seealso::
        :ref:`howto/decorator:ray`

    :param python_callable: The function to run.
    :param multiple_outputs: Unroll a returned dict into one XCom per key.
    :param python: Interpreter that runs the function on the cluster (default ``python``).
    """
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=_RayDecoratedOperator,
        **kwargs,
    )
