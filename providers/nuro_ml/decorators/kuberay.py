"""``@task.kuberay``: run a Python function as a KubeRay RayJob on Kubernetes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml
from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory

from nuro_ml.decorators.payload import PAYLOAD_ENV, bootstrap_command, encode_payload, return_value
from nuro_ml.exceptions import KubeRayJobError, RayJobSpecInvalidError
from nuro_ml.kube.rayjob import RayJobSpec
from nuro_ml.links.kuberay import dashboard_url
from nuro_ml.operators.kuberay import KubeRayJobOperator
from nuro_ml.operators.ray import RESULT_MARKER, log_tail, parse_result_line, strip_ansi

if TYPE_CHECKING:
    from airflow.sdk import Context

    from nuro_ml.kube.status import RayJobInfo

#: Seconds KubeRay keeps the finished RayCluster, so the result can be read from its dashboard.
RESULT_READ_WINDOW_SECONDS = 120


def _spec(rayjob: RayJobSpec | Mapping[str, Any] | None, entrypoint: str) -> RayJobSpec:
    if rayjob is None:
        return RayJobSpec(entrypoint=entrypoint)
    if isinstance(rayjob, RayJobSpec):
        fields = rayjob.model_dump(exclude_unset=True)
    elif isinstance(rayjob, Mapping):
        fields = dict(rayjob)
    else:
        raise RayJobSpecInvalidError(
            "@task.kuberay: rayjob must be a RayJobSpec or a mapping of its fields, "
            f"got {type(rayjob).__name__}"
        )
    if "entrypoint" in fields and isinstance(rayjob, Mapping):
        raise RayJobSpecInvalidError(
            "@task.kuberay: rayjob must not set entrypoint; the job runs the function"
        )
    fields["entrypoint"] = entrypoint
    return RayJobSpec.model_validate(fields)


class _KubeRayDecoratedOperator(DecoratedOperator, KubeRayJobOperator):
    """A :class:`~nuro_ml.operators.kuberay.KubeRayJobOperator` whose job calls the decorated function."""

    custom_operator_name = "@task.kuberay"
    template_fields: Sequence[str] = tuple({"op_args", "op_kwargs", *KubeRayJobOperator.template_fields})
    shallow_copy_attrs: Sequence[str] = ("python_callable",)

    def __init__(
        self,
        *,
        python: str = "python",
        rayjob: RayJobSpec | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.python = python
        super().__init__(rayjob=_spec(rayjob, bootstrap_command(python, RESULT_MARKER)), **kwargs)

    def execute(self, context: Context) -> Any:
        payload = encode_payload(
            source=self.get_python_source(),
            function_name=self.python_callable.__name__,
            args=self.op_args,
            kwargs=self.op_kwargs,
        )
        spec = self.rayjob
        if not isinstance(spec, RayJobSpec):
            raise RayJobSpecInvalidError(f"task {self.task_id}: rayjob became a {type(spec).__name__}")
        runtime_env = dict(spec.runtime_env or {})
        if spec.runtime_env_yaml:
            runtime_env.update(yaml.safe_load(spec.runtime_env_yaml) or {})
        runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), PAYLOAD_ENV: payload}
        self.rayjob = spec.model_copy(
            update={
                "entrypoint": bootstrap_command(self.python, RESULT_MARKER),
                "runtime_env": runtime_env,
                "runtime_env_yaml": None,
                "ttl_seconds_after_finished": max(
                    spec.ttl_seconds_after_finished, RESULT_READ_WINDOW_SECONDS
                ),
            }
        )
        return super().execute(context)

    def _job_logs(self, info: RayJobInfo) -> str:
        """The Ray job's log from its cluster's dashboard (Ray Jobs API)."""
        from nuro_ml.hooks.ray import RayHook

        if not info.dashboard_url or not info.job_id:
            raise KubeRayJobError(
                f"RayJob {info.namespace}/{info.name} reports no dashboard or job id to read its result from"
            )
        url = dashboard_url(
            template=self.dashboard_url_template,
            dashboard=info.dashboard_url,
            name=info.name,
            namespace=info.namespace,
            cluster=info.ray_cluster_name,
        )
        logs = RayHook(None, address=url).get_job_logs(info.job_id)
        for line in strip_ansi(logs).splitlines():
            self.log.info("[ray] %s", line)
        return logs

    def _finish(self, context: Context, info: RayJobInfo) -> Any:
        try:
            super()._finish(context, info)
        except KubeRayJobError as err:
            try:
                tail = log_tail(self._job_logs(info), 40)
            except Exception as log_err:
                self.log.warning(
                    "Could not read the log of RayJob %s/%s: %s", info.namespace, info.name, log_err
                )
                raise err from None
            raise KubeRayJobError(f"{err}\nlast 40 log lines:\n{tail}") from err
        return return_value(parse_result_line(self._job_logs(info)), f"RayJob {info.namespace}/{info.name}")


def kuberay_task(
    python_callable: Callable[..., Any] | None = None,
    multiple_outputs: bool | None = None,
    **kwargs: Any,
) -> TaskDecorator:
    """
    Run the decorated function as a KubeRay RayJob on Kubernetes.

    Everything :class:`~nuro_ml.operators.kuberay.KubeRayJobOperator` accepts is accepted here
    (``kubernetes_conn_id``, ``namespace``, ``dashboard_url_template``, ``deferrable``...);
    ``rayjob`` is a :class:`~nuro_ml.kube.rayjob.RayJobSpec` (or a mapping of its fields) without
    ``entrypoint``: image, head and worker groups, GPUs, Kueue queue. The RayJob is named after
    the task instance and re-attached on retry; killing the task deletes it.

    The return value is read from the job's log through the Ray cluster's dashboard, so KubeRay
    is asked to keep the finished cluster for at least two minutes
    (``ttl_seconds_after_finished``), and the dashboard must be reachable from the worker (in
    cluster, or through ``dashboard_url_template``). The same rules and size limits as for
    :func:`~nuro_ml.decorators.ray.ray_task` apply to the function, its arguments and its return
    value.

    .. seealso::
        :ref:`howto/decorator:kuberay`

    :param python_callable: The function to run.
    :param multiple_outputs: Unroll a returned dict into one XCom per key.
    :param python: Interpreter that runs the function in the Ray head pod (default ``python``).
    """
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=_KubeRayDecoratedOperator,
        **kwargs,
    )
