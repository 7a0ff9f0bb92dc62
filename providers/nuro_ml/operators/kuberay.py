"""Run a Ray job on Kubernetes as a KubeRay ``RayJob`` custom resource."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import yaml
from airflow.sdk import BaseOperator

from nuro_ml.capacity.pinning import lease_from_xcom, pin_kueue_topology, pin_rayjob_manifest
from nuro_ml.exceptions import KubeRayJobError, RayJobAlreadyExistsError, RayJobSpecInvalidError
from nuro_ml.hooks.kuberay import KubeRayHook, KubeRayHookProtocol
from nuro_ml.kube.manifest import validate_rayjob_manifest
from nuro_ml.kube.naming import (
    IDENTITY_ANNOTATION,
    TRY_ANNOTATION,
    identity_annotations,
    identity_labels,
    owned_by,
    rayjob_name,
)
from nuro_ml.kube.rayjob import RayJobSpec
from nuro_ml.kube.status import RayJobInfo
from nuro_ml.links.kuberay import DASHBOARD_URL_XCOM_KEY, KubeRayDashboardLink, dashboard_url
from nuro_ml.task_key import TaskKey
from nuro_ml.triggers.kuberay import KubeRayJobTrigger

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

#: XCom key with ``{"name", "namespace", "uid"}`` of the RayJob, pushed before waiting.
RAYJOB_XCOM_KEY = "rayjob"


class KubeRayJobOperator(BaseOperator):
    """
    Run a Ray job on Kubernetes through KubeRay: create a ``ray.io/v1`` RayJob and wait for it.

    The manifest is validated against the KubeRay CRD (and KubeRay's and Kueue's own rules)
    before any API call. The RayJob is named after the task instance, so a retry re-attaches to
    the RayJob an earlier try created (or replaces it if that one failed) instead of running the
    work twice. With a Kueue queue the job is created suspended and waits for admission.

    XCom: ``rayjob`` (name, namespace, uid) is pushed right after creation, ``dashboard_url`` as
    soon as KubeRay reports it (shown as the "Ray Dashboard" extra link); the return value is the
    final RayJob object (status included). A failed, deadline-exceeded or deleted RayJob raises
    :class:`~nuro_ml.exceptions.KubeRayJobError` with KubeRay's reason and message.

    .. seealso::
        For more information on how to use this operator, take a look at the guide:
        :ref:`howto/operator:KubeRayJobOperator`

    :param rayjob: what to run: a :class:`~nuro_ml.kube.rayjob.RayJobSpec`, a complete RayJob
        manifest as a dict, or YAML text / a ``.yaml`` file path with one. (templated)
    :param name: RayJob name; by default derived from (dag_id, run_id, task_id, map_index).
        (templated)
    :param namespace: namespace of the RayJob; defaults to the manifest's, then the connection's
        ``namespace`` extra, then ``default``. (templated)
    :param kubernetes_conn_id: the :ref:`Kubernetes connection <howto/connection:kubernetes>`
        (kubeconfig path or content, or in-cluster). (templated)
    :param config_file: kubeconfig path, overriding the connection. (templated)
    :param cluster_context: kubeconfig context, overriding the connection. (templated)
    :param in_cluster: use the pod's service account, overriding the connection.
    :param dashboard_url_template: turns KubeRay's in-cluster dashboard address into the URL of the
        extra link; placeholders ``{dashboard}``, ``{name}``, ``{namespace}``, ``{cluster}``.
        (templated)
    :param poll_interval: seconds between two status reads.
    :param deleted_wait_timeout: seconds to wait for a failed RayJob of an earlier try to be gone
        before re-creating it.
    :param deferrable: wait in the triggerer instead of occupying a worker slot. True by default:
        a RayJob may queue in Kueue and train for hours.
    :param lease_task_id: task id of the GPU-capacity sensor whose lease the job runs under:
        every GPU pod gets a required node affinity on the lease's nodes
        (``kubernetes.io/hostname``), so it runs where the gate counted it. With a Kueue queue
        (``queue_name`` or the ``kueue.x-k8s.io/queue-name`` label), each GPU pod set also gets
        Kueue's topology-aware scheduling request at the level the lease was placed at: one
        host for a one-node lease, one host per node's slice of pods for an even multi-node
        lease. A topology request already on a pod template is kept. (templated)
    """

    template_fields: Sequence[str] = (
        "rayjob",
        "name",
        "namespace",
        "kubernetes_conn_id",
        "config_file",
        "cluster_context",
        "dashboard_url_template",
        "lease_task_id",
    )
    template_ext: Sequence[str] = (".yaml", ".yml", ".json")
    template_fields_renderers = {"rayjob": "yaml"}
    operator_extra_links = (KubeRayDashboardLink(),)
    ui_color = "#e8f4ff"

    def __init__(
        self,
        *,
        rayjob: RayJobSpec | dict[str, Any] | str,
        name: str | None = None,
        namespace: str | None = None,
        kubernetes_conn_id: str | None = KubeRayHook.default_conn_name,
        config_file: str | None = None,
        cluster_context: str | None = None,
        in_cluster: bool | None = None,
        dashboard_url_template: str | None = None,
        poll_interval: float = 10.0,
        deleted_wait_timeout: float = 300.0,
        deferrable: bool = True,
        lease_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lease_task_id = lease_task_id
        self.rayjob = rayjob
        self.name = name
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id
        self.config_file = config_file
        self.cluster_context = cluster_context
        self.in_cluster = in_cluster
        self.dashboard_url_template = dashboard_url_template
        self.poll_interval = poll_interval
        self.deleted_wait_timeout = deleted_wait_timeout
        self.deferrable = deferrable
        self._killed = False
        self._target: tuple[str, str] | None = None

    @cached_property
    def hook(self) -> KubeRayHookProtocol:
        return KubeRayHook(
            conn_id=self.kubernetes_conn_id,
            config_file=self.config_file,
            cluster_context=self.cluster_context,
            in_cluster=self.in_cluster,
        )

    def _refresh_cached_properties(self) -> None:
        self.__dict__.pop("hook", None)

    # -- manifest -------------------------------------------------------------------------

    def _raw_manifest(self) -> dict[str, Any] | None:
        if isinstance(self.rayjob, dict):
            return dict(self.rayjob)
        if isinstance(self.rayjob, str):
            try:
                loaded = yaml.safe_load(self.rayjob)
            except yaml.YAMLError as err:
                raise RayJobSpecInvalidError(f"task {self.task_id}: rayjob is not valid YAML: {err}") from err
            if not isinstance(loaded, dict):
                raise RayJobSpecInvalidError(
                    f"task {self.task_id}: rayjob YAML must be one RayJob object, got {type(loaded).__name__}"
                )
            return loaded
        return None

    def build_manifest(self, context: Context) -> dict[str, Any]:
        """The validated RayJob for this task instance (raises before any API call if invalid).

        Under a GPU lease (``lease_task_id``) every GPU pod requires the lease's nodes and, in a
        Kueue queue, every GPU pod set carries the lease's topology request.
        """
        manifest = self._build_manifest(context)
        if not self.lease_task_id:
            return manifest
        placement = lease_from_xcom(
            context["ti"].xcom_pull(task_ids=self.lease_task_id, key="lease"), source=f"task {self.task_id}"
        )
        if placement is None:
            return manifest
        self.log.info("Pinning GPU pods to lease %s nodes %s", placement.lease_id, ",".join(placement.nodes))
        pinned = pin_rayjob_manifest(manifest, placement.nodes)
        for pod_set, request in pin_kueue_topology(pinned, placement).items():
            self.log.info("Kueue topology request of pod set %s: %s", pod_set, request.annotations())
        return validate_rayjob_manifest(pinned)

    def _build_manifest(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        key = TaskKey.of(ti)
        annotations = identity_annotations(key, try_number=int(getattr(ti, "try_number", 1) or 1))
        labels = identity_labels(task_id=key.task_id)
        raw = self._raw_manifest()
        manifest_ns = ((raw or {}).get("metadata") or {}).get("namespace")
        namespace = self.namespace or manifest_ns or self.hook.get_namespace() or "default"
        manifest_name = ((raw or {}).get("metadata") or {}).get("name")
        name = self.name or manifest_name or rayjob_name(key)
        if raw is None:
            if not isinstance(self.rayjob, RayJobSpec):
                raise RayJobSpecInvalidError(
                    f"task {self.task_id}: rayjob must be a RayJobSpec, a manifest dict or YAML, "
                    f"got {type(self.rayjob).__name__}"
                )
            return self.rayjob.to_manifest(
                name=name, namespace=namespace, labels=labels, annotations=annotations
            )
        metadata = dict(raw.get("metadata") or {})
        metadata["name"] = name
        metadata["namespace"] = namespace
        metadata["labels"] = {**labels, **(metadata.get("labels") or {})}
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
        raw["metadata"] = metadata
        return validate_rayjob_manifest(raw)

    # -- execution ------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        manifest = self.build_manifest(context)
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        self._target = (name, namespace)
        info = self._create_or_attach(manifest)
        context["ti"].xcom_push(
            key=RAYJOB_XCOM_KEY, value={"name": name, "namespace": namespace, "uid": info.uid}
        )
        if info.dashboard_url:
            self._push_dashboard(context, info)
        if info.is_terminal:
            return self._finish(context, info)
        if self.deferrable:
            self._defer(info, report_dashboard=not info.dashboard_url)
        return self._wait(context, info)

    def _create_or_attach(self, manifest: dict[str, Any]) -> RayJobInfo:
        metadata = manifest["metadata"]
        name, namespace = metadata["name"], metadata["namespace"]
        key = TaskKey.parse(metadata["annotations"][IDENTITY_ANNOTATION])
        for _ in range(3):
            try:
                info = self.hook.create_rayjob(manifest=manifest)
                self.log.info("Created RayJob %s/%s (uid %s)", namespace, name, info.uid)
                return info
            except RayJobAlreadyExistsError:
                existing = self.hook.get_rayjob(name=name, namespace=namespace)
            if existing is None:
                continue  # deleted between our create and get: try creating again
            if not owned_by(existing.annotations, key):
                owner = existing.annotations.get(IDENTITY_ANNOTATION, "another owner")
                raise KubeRayJobError(
                    f"RayJob {namespace}/{name} already exists but was not created by task instance "
                    f"{key} (it belongs to {owner}); set another name or namespace"
                )
            if existing.deleting:
                self.log.info("RayJob %s/%s from an earlier try is being deleted; waiting", namespace, name)
            elif existing.is_terminal and not existing.succeeded_outcome:
                self.log.warning(
                    "RayJob %s/%s from try %s ended %s; deleting it to run again",
                    namespace,
                    name,
                    existing.annotations.get(TRY_ANNOTATION, "?"),
                    existing.describe(),
                )
                self.hook.delete_rayjob(name=name, namespace=namespace)
            else:
                self.log.info(
                    "Re-attaching to RayJob %s/%s created by try %s: %s",
                    namespace,
                    name,
                    existing.annotations.get(TRY_ANNOTATION, "?"),
                    existing.describe(),
                )
                return existing
            self.hook.wait_rayjob_deleted(
                name=name,
                namespace=namespace,
                timeout=self.deleted_wait_timeout,
                poll_interval=min(self.poll_interval, 2.0),
            )
        raise KubeRayJobError(
            f"RayJob {namespace}/{name} kept conflicting with concurrent changes; giving up"
        )

    def _defer(self, info: RayJobInfo, *, report_dashboard: bool) -> None:
        self.defer(
            trigger=KubeRayJobTrigger(
                name=info.name,
                namespace=info.namespace,
                kubernetes_conn_id=self.kubernetes_conn_id,
                config_file=self.config_file,
                cluster_context=self.cluster_context,
                in_cluster=self.in_cluster,
                expected_uid=info.uid or None,
                report_dashboard=report_dashboard,
                poll_interval=self.poll_interval,
            ),
            method_name="execute_complete",
        )

    def _wait(self, context: Context, info: RayJobInfo) -> Any:
        seen = (str(info.deployment_status), str(info.job_status))
        dashboard_known = bool(info.dashboard_url)
        while not info.is_terminal:
            time.sleep(self.poll_interval)
            current = self.hook.get_rayjob(name=info.name, namespace=info.namespace)
            if current is None or (info.uid and current.uid != info.uid) or current.deleting:
                raise KubeRayJobError(f"RayJob {info.namespace}/{info.name} was deleted before it finished")
            info = current
            if (str(info.deployment_status), str(info.job_status)) != seen:
                seen = (str(info.deployment_status), str(info.job_status))
                self.log.info("%s", info.describe())
            if info.dashboard_url and not dashboard_known:
                self._push_dashboard(context, info)
                dashboard_known = True
        return self._finish(context, info)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger: re-defer on ``running``, return or raise on the outcome."""
        status = event.get("status")
        rayjob = event.get("rayjob") or {}
        if event.get("object"):
            info = RayJobInfo.from_object(event["object"])
        else:
            info = RayJobInfo(name=event.get("name", ""), namespace=event.get("namespace", ""))
        self._target = (info.name or event.get("name", ""), info.namespace or event.get("namespace", ""))
        if status == "running":
            self._push_dashboard(context, info)
            self.log.info("%s", event.get("message", ""))
            self._defer(info, report_dashboard=False)
        if status in ("success", "failed"):
            return self._finish(context, info)
        message = event.get("message") or "no message"
        if status == "deleted":
            raise KubeRayJobError(message)
        if event.get("stack_trace"):
            self.log.error("Trigger failed:\n%s", event["stack_trace"])
        raise KubeRayJobError(
            f"RayJob {event.get('namespace')}/{event.get('name')}: trigger ended with status {status!r}: "
            f"{message}" + (f" (last seen: {rayjob})" if rayjob else "")
        )

    def _push_dashboard(self, context: Context, info: RayJobInfo) -> None:
        url = dashboard_url(
            template=self.dashboard_url_template,
            dashboard=info.dashboard_url,
            name=info.name,
            namespace=info.namespace,
            cluster=info.ray_cluster_name,
        )
        self.log.info("Ray dashboard of RayJob %s/%s: %s", info.namespace, info.name, url)
        context["ti"].xcom_push(key=DASHBOARD_URL_XCOM_KEY, value=url)

    def _finish(self, context: Context, info: RayJobInfo) -> dict[str, Any]:
        if info.dashboard_url:
            self._push_dashboard(context, info)
        if info.succeeded_outcome:
            self.log.info("%s", info.describe())
            return info.object
        reason = info.reason or f"job status {info.job_status or 'unknown'}"
        raise KubeRayJobError(
            f"RayJob {info.namespace}/{info.name} did not succeed ({reason}): deployment status "
            f"{info.deployment_status}, job status {info.job_status or 'none'}"
            + (f": {info.message}" if info.message else "")
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The declared inlets and outlets, and the RayJob that ran (OpenLineage)."""
        from nuro_ml.lineage.training import kuberay_job_lineage

        return kuberay_job_lineage(self)

    def on_kill(self) -> None:
        """Delete the RayJob; KubeRay stops the Ray job and removes its RayCluster."""
        self._killed = True
        if self._target is None:
            return
        name, namespace = self._target
        try:
            if self.hook.delete_rayjob(name=name, namespace=namespace):
                self.log.info("Deleted RayJob %s/%s", namespace, name)
            else:
                self.log.info("RayJob %s/%s was already gone", namespace, name)
        except Exception:
            self.log.exception("Could not delete RayJob %s/%s", namespace, name)


__all__ = ["RAYJOB_XCOM_KEY", "KubeRayJobOperator"]
