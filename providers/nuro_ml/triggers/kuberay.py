"""Trigger that follows a RayJob until KubeRay reports a terminal state."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import tenacity
from airflow.triggers.base import BaseTrigger, TriggerEvent

from nuro_ml.exceptions import KubeRayJobError
from nuro_ml.hooks.kuberay import AsyncKubeRayHook
from nuro_ml.kube.crds import KUEUE_QUEUE_LABEL
from nuro_ml.kube.status import JobDeploymentStatus, RayJobInfo


def _transient(err: BaseException) -> bool:
    # Retry what a moment may fix (network, server overload); a 4xx or a bad kubeconfig will not.
    if isinstance(err, KubeRayJobError):
        return err.is_transient
    return isinstance(err, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError)


class KubeRayJobTrigger(BaseTrigger):
    """Poll a RayJob and yield one event when it finishes, fails, disappears or shows its dashboard.

    While Kueue holds a queued RayJob suspended, the log gives its Workload's reason each time
    it changes (quota it waits for, an eviction), as ``kubectl describe workload`` shows it.

    Event payload: ``status`` is ``success`` (Complete and SUCCEEDED), ``failed`` (Failed,
    ValidationFailed, or Complete with the Ray job STOPPED/FAILED), ``deleted`` (the object is
    gone, being deleted, or was re-created under the same name), ``running`` (only with
    ``report_dashboard``: the dashboard URL is known, the job goes on) or ``error`` (with
    ``stack_trace``); ``rayjob`` holds :meth:`RayJobInfo.to_dict`, ``object`` the RayJob.

    :param name: RayJob name.
    :param namespace: RayJob namespace.
    :param kubernetes_conn_id: the Kubernetes connection.
    :param config_file: kubeconfig path, overriding the connection's.
    :param cluster_context: kubeconfig context, overriding the connection's.
    :param in_cluster: use the pod's service account, overriding the connection's.
    :param expected_uid: ``metadata.uid`` of the RayJob the task created; another uid means the
        job was deleted and re-created by someone else.
    :param report_dashboard: yield a ``running`` event as soon as ``status.dashboardURL`` is set.
    :param poll_interval: seconds between two reads.
    :param delete_on_kill: delete the RayJob (only the incarnation with ``expected_uid``, when
        given) if a user kills the deferred task: mark failed/success or clear.
    """

    def __init__(
        self,
        *,
        name: str,
        namespace: str,
        kubernetes_conn_id: str | None = "kubernetes_default",
        config_file: str | None = None,
        cluster_context: str | None = None,
        in_cluster: bool | None = None,
        expected_uid: str | None = None,
        report_dashboard: bool = False,
        poll_interval: float = 10.0,
        delete_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.name = name
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id
        self.config_file = config_file
        self.cluster_context = cluster_context
        self.in_cluster = in_cluster
        self.expected_uid = expected_uid
        self.report_dashboard = report_dashboard
        self.poll_interval = poll_interval
        self.delete_on_kill = delete_on_kill
        self._workloads_readable = True

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__name__}",
            {
                "name": self.name,
                "namespace": self.namespace,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "config_file": self.config_file,
                "cluster_context": self.cluster_context,
                "in_cluster": self.in_cluster,
                "expected_uid": self.expected_uid,
                "report_dashboard": self.report_dashboard,
                "poll_interval": self.poll_interval,
                "delete_on_kill": self.delete_on_kill,
            },
        )

    def _hook(self) -> AsyncKubeRayHook:
        return AsyncKubeRayHook(
            conn_id=self.kubernetes_conn_id,
            config_file=self.config_file,
            cluster_context=self.cluster_context,
            in_cluster=self.in_cluster,
        )

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential(multiplier=0.25, max=5),
        retry=tenacity.retry_if_exception(_transient),
        reraise=True,
    )
    async def _read(self, hook: AsyncKubeRayHook) -> RayJobInfo | None:
        return await hook.get_rayjob(name=self.name, namespace=self.namespace)

    async def _kueue_wait(self, hook: AsyncKubeRayHook, info: RayJobInfo) -> str | None:
        """Why Kueue holds ``info`` back; None when unknown (no Workload yet, or unreadable)."""
        try:
            workload = await hook.get_kueue_workload(info)
        except KubeRayJobError as err:
            if not err.is_transient:
                # A role that may not list Workloads stays so: say it once, then stop asking.
                self.log.warning("%s; the wait reason will not be shown", err)
                self._workloads_readable = False
            return None
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            return None  # only the reason is missing this time; the next poll asks again
        return workload.describe() if workload is not None else None

    def _event(self, status: str, message: str, info: RayJobInfo | None) -> TriggerEvent:
        payload: dict[str, Any] = {
            "status": status,
            "name": self.name,
            "namespace": self.namespace,
            "message": message,
        }
        if info is not None:
            payload["rayjob"] = info.to_dict()
            payload["object"] = info.object
        return TriggerEvent(payload)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        where = f"RayJob {self.namespace}/{self.name}"
        try:
            hook = self._hook()
            seen: tuple[str, str, bool] | None = None
            kueue_said: str | None = None
            while True:
                info = await self._read(hook)
                if info is None:
                    yield self._event("deleted", f"{where} was deleted before it finished", None)
                    return
                if self.expected_uid and info.uid != self.expected_uid:
                    yield self._event(
                        "deleted",
                        f"{where} was deleted and re-created (uid {info.uid}, expected {self.expected_uid})",
                        info,
                    )
                    return
                state = (str(info.deployment_status), str(info.job_status), info.suspended)
                if state != seen:
                    self.log.info("%s", info.describe())
                    if info.deployment_status == JobDeploymentStatus.SUSPENDED and info.suspended:
                        self.log.info("%s is suspended, waiting for Kueue to admit it", where)
                    seen = state
                if info.suspended and KUEUE_QUEUE_LABEL in info.labels and self._workloads_readable:
                    said = await self._kueue_wait(hook, info)
                    if said is not None and said != kueue_said:
                        self.log.info("%s", said)
                        kueue_said = said
                if info.is_terminal:
                    status = "success" if info.succeeded_outcome else "failed"
                    yield self._event(status, info.describe(), info)
                    return
                if info.deleting:
                    yield self._event("deleted", f"{where} is being deleted before it finished", info)
                    return
                if self.report_dashboard and info.dashboard_url:
                    yield self._event("running", info.describe(), info)
                    return
                await asyncio.sleep(self.poll_interval)
        except Exception as err:
            self.log.exception("Failed while following %s", where)
            yield TriggerEvent(
                {
                    "status": "error",
                    "name": self.name,
                    "namespace": self.namespace,
                    "message": f"error while following {where}: {err}",
                    "stack_trace": traceback.format_exc(),
                }
            )

    async def on_kill(self) -> None:
        """The task was killed while deferred: delete the RayJob, as the operator's ``on_kill`` does."""
        if not self.delete_on_kill:
            return
        where = f"RayJob {self.namespace}/{self.name}"
        try:
            deleted = await self._hook().delete_rayjob(
                name=self.name, namespace=self.namespace, uid=self.expected_uid
            )
        except Exception:
            self.log.exception("Could not delete %s", where)
        else:
            self.log.info("Deleted %s" if deleted else "%s was already gone", where)
