"""Operators that plan, apply, destroy and drift-check Terraform configurations.

The apply of a reviewed plan is the production path: :class:`TerraformPlanOperator` saves a plan and
pushes its change summary, an optional human approval (:class:`TerraformPlanApprovalOperator`, Airflow's
HITL ``ApprovalOperator``) reviews it when it destroys or replaces anything, and
:class:`TerraformApplyOperator` applies exactly that plan,
refusing it when the state has changed since (:class:`~nuro_ml.exceptions.StalePlanError`).
:func:`terraform_plan_and_apply` wires the three together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator, TaskGroup, TriggerRule

from nuro_ml.exceptions import TerraformError
from nuro_ml.hooks.terraform import TerraformHook, terraform_output_log
from nuro_ml.task_key import TaskKey
from nuro_ml.terraform_support.approval import (
    DEFAULT_APPROVAL_ACTIONS,
    approval_actions,
    changes_needing_approval,
)
from nuro_ml.terraform_support.plan import PlanSummary

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

_COMMON_TEMPLATE_FIELDS: tuple[str, ...] = (
    "working_dir",
    "terraform_conn_id",
    "backend_conn_id",
    "environment",
    "workspace",
    "variables",
    "backend_config",
    "env",
)


class _TerraformBaseOperator(BaseOperator):
    """Arguments and lifecycle shared by every Terraform operator."""

    template_fields: Sequence[str] = _COMMON_TEMPLATE_FIELDS
    template_fields_renderers = {"variables": "json", "backend_config": "json", "env": "json"}
    ui_color = "#e6dcf9"

    def __init__(
        self,
        *,
        working_dir: str | Path,
        terraform_conn_id: str | None = None,
        backend_conn_id: str | None = None,
        environment: str | None = None,
        workspace: str = "default",
        variables: Mapping[str, Any] | None = None,
        backend_config: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        plugin_dir: str | None = None,
        terraform_bin: str | None = None,
        lock_timeout: str | int = "120s",
        kill_grace_period: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.working_dir = str(working_dir)
        self.terraform_conn_id = terraform_conn_id
        self.backend_conn_id = backend_conn_id
        self.environment = environment
        self.workspace = workspace
        self.variables = dict(variables or {})
        self.backend_config = dict(backend_config or {})
        self.env = dict(env or {})
        self.plugin_dir = plugin_dir
        self.terraform_bin = terraform_bin
        self.lock_timeout = lock_timeout
        self.kill_grace_period = kill_grace_period
        self._hook: TerraformHook | None = None
        self._killed = False

    def build_hook(self, context: Context) -> TerraformHook:
        """A fresh hook (own ``TF_DATA_DIR``) for this task instance, after templates are rendered."""
        return TerraformHook(
            working_dir=self.working_dir,
            terraform_conn_id=self.terraform_conn_id or None,
            backend_conn_id=self.backend_conn_id or None,
            environment=self.environment or None,
            workspace=self.workspace or "default",
            variables=self.variables,
            backend_config=self.backend_config,
            plugin_dir=self.plugin_dir,
            terraform_bin=self.terraform_bin,
            lock_timeout=self.lock_timeout,
            run_key=TaskKey.of(context["ti"]),
            env=self.env,
        )

    def execute(self, context: Context) -> Any:
        self._killed = False
        self._hook = self.build_hook(context)
        try:
            result = self.run_terraform(self._hook, context)
            self._lineage_result = result
            return result
        finally:
            self._hook.close()

    def run_terraform(self, hook: TerraformHook, context: Context) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement run_terraform")

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The workspace this operator read or changed (OpenLineage)."""
        from nuro_ml.lineage.terraform import terraform_operator_lineage

        return terraform_operator_lineage(self)

    def on_kill(self) -> None:
        """Interrupt the running Terraform command (SIGINT) so it releases the state lock cleanly."""
        self._killed = True
        hook = self._hook
        if hook is None:
            return
        try:
            if hook.interrupt(grace_period=self.kill_grace_period):
                self.log.info("Sent SIGINT to Terraform in %s", hook.working_dir)
        except Exception:
            self.log.exception("Could not interrupt Terraform in %s", hook.working_dir)

    @staticmethod
    def log_outputs(outputs: Mapping[str, Any], sensitive: Iterable[str]) -> None:
        hidden = set(sensitive)
        shown = ", ".join(
            f"{name} = {'(sensitive)' if name in hidden else repr(outputs.get(name))}"
            for name in sorted(set(outputs) | hidden)
        )
        terraform_output_log.info("Terraform outputs: %s", shown or "none")


class TerraformPlanOperator(_TerraformBaseOperator):
    """
    Save a Terraform plan and push its change summary.

    .. seealso::
        :ref:`howto/operator:TerraformPlanOperator`

    The XCom return value is ``{"plan_file": str, "environment": str, "workspace": str,
    "has_changes": bool, "summary": {"add": [...], "change": [...], "replace": [...], "destroy": [...],
    "read": [...], "outputs": {name: action}, "drift": [...], "has_changes": bool},
    "report": str (Markdown)}``; lists hold resource addresses.

    :param working_dir: Directory of the root module. (templated)
    :param terraform_conn_id: Connection of type ``terraform`` (backend config, secret variables). (templated)
    :param backend_conn_id: PostgreSQL connection for the ``pg`` backend. (templated)
    :param environment: Name of the state and plan directory (default: name of ``working_dir``). (templated)
    :param workspace: Terraform workspace, created when missing. (templated)
    :param variables: Non-secret input variables. (templated)
    :param backend_config: Backend settings for ``init``. (templated)
    :param env: Extra environment variables for Terraform. (templated)
    :param plugin_dir: Provider mirror directory (default: the repository's ``.terraform-plugins``).
    :param terraform_bin: Terraform executable (default: the packaged binary).
    :param lock_timeout: How long to wait for the state lock.
    :param kill_grace_period: Seconds ``on_kill`` waits for Terraform to stop after SIGINT.
    :param destroy: Plan the destruction of everything in the state instead.
    """

    def __init__(self, *, destroy: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.destroy = destroy

    def run_terraform(self, hook: TerraformHook, context: Context) -> dict[str, Any]:
        result = hook.plan(destroy=self.destroy)
        self.log.info("Plan for %s (%s): %s", hook.working_dir, hook.workspace, result.summary.describe())
        return {
            "plan_file": str(result.plan_file),
            "environment": hook.environment,
            "workspace": hook.workspace,
            "has_changes": result.summary.has_changes,
            "summary": result.summary.to_dict(),
            "report": result.summary.markdown(
                title=f"Terraform plan for {hook.environment}/{hook.workspace}"
            ),
        }


class TerraformApplyOperator(_TerraformBaseOperator):
    """
    Apply a reviewed Terraform plan, or plan and apply in one step, and push the outputs.

    .. seealso::
        :ref:`howto/operator:TerraformApplyOperator`

    With ``plan_file`` the saved plan is applied exactly as reviewed; when the state changed after it
    was made, Terraform refuses it and :class:`~nuro_ml.exceptions.StalePlanError` is raised with
    nothing applied. The XCom return value is a dict of the root module's non-sensitive outputs
    (sensitive outputs are masked in logs and left out).

    :param plan_file: Saved plan to apply, usually the ``plan_file`` of a
        :class:`TerraformPlanOperator` (templated). Without it, the operator plans and applies itself.
    :param working_dir: Directory of the root module. (templated)
    :param terraform_conn_id: Connection of type ``terraform`` (backend config, secret variables). (templated)
    :param backend_conn_id: PostgreSQL connection for the ``pg`` backend. (templated)
    :param environment: Name of the state and plan directory (default: name of ``working_dir``). (templated)
    :param workspace: Terraform workspace, created when missing. (templated)
    :param variables: Non-secret input variables (ignored for a saved plan, which fixed them). (templated)
    :param backend_config: Backend settings for ``init``. (templated)
    :param env: Extra environment variables for Terraform. (templated)
    :param plugin_dir: Provider mirror directory (default: the repository's ``.terraform-plugins``).
    :param terraform_bin: Terraform executable (default: the packaged binary).
    :param lock_timeout: How long to wait for the state lock.
    :param kill_grace_period: Seconds ``on_kill`` waits for Terraform to stop after SIGINT.
    :param keep_plan_file: Keep the saved plan after a successful apply (it holds variable values, so it
        is removed by default).
    """

    template_fields: Sequence[str] = (*_COMMON_TEMPLATE_FIELDS, "plan_file")

    def __init__(self, *, plan_file: str | None = None, keep_plan_file: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_file = plan_file
        self.keep_plan_file = keep_plan_file

    def run_terraform(self, hook: TerraformHook, context: Context) -> dict[str, Any]:
        plan_file = Path(self.plan_file) if self.plan_file and self.plan_file != "None" else None
        if plan_file is None:
            planned = hook.plan()
            self.log.info("No reviewed plan given; applying fresh plan: %s", planned.summary.describe())
            plan_file = planned.plan_file
            owned = True
        else:
            self.log.info("Applying reviewed plan %s", plan_file)
            owned = False
        result = hook.apply(plan_file=plan_file)
        self.log.info(
            "Applied %s: %d added, %d changed, %d destroyed",
            hook.working_dir,
            result.added,
            result.changed,
            result.removed,
        )
        if owned or not self.keep_plan_file:
            plan_file.unlink(missing_ok=True)
        outputs = hook.outputs()
        visible = {name: out.value for name, out in outputs.items() if not out.sensitive}
        self.log_outputs(visible, [name for name, out in outputs.items() if out.sensitive])
        return visible


class TerraformDestroyOperator(_TerraformBaseOperator):
    """
    Destroy everything a Terraform configuration manages in one workspace (idempotent).

    .. seealso::
        :ref:`howto/operator:TerraformDestroyOperator`

    Meant as an Airflow teardown task (``.as_teardown(setups=apply_task)``) so that infrastructure is
    released even when the work in between fails. An empty state is a successful no-op. The XCom
    return value is ``{"destroyed": [addresses], "count": int}``.

    :param working_dir: Directory of the root module. (templated)
    :param terraform_conn_id: Connection of type ``terraform`` (backend config, secret variables). (templated)
    :param backend_conn_id: PostgreSQL connection for the ``pg`` backend. (templated)
    :param environment: Name of the state and plan directory (default: name of ``working_dir``). (templated)
    :param workspace: Terraform workspace, created when missing. (templated)
    :param variables: Non-secret input variables (required variables must be set for destroy too). (templated)
    :param backend_config: Backend settings for ``init``. (templated)
    :param env: Extra environment variables for Terraform. (templated)
    :param plugin_dir: Provider mirror directory (default: the repository's ``.terraform-plugins``).
    :param terraform_bin: Terraform executable (default: the packaged binary).
    :param lock_timeout: How long to wait for the state lock.
    :param kill_grace_period: Seconds ``on_kill`` waits for Terraform to stop after SIGINT.
    """

    def run_terraform(self, hook: TerraformHook, context: Context) -> dict[str, Any]:
        result = hook.destroy()
        destroyed = sorted(addr for addr, action in result.resources.items() if action == "delete")
        if result.removed:
            self.log.info("Destroyed %d resource(s) in %s: %s", result.removed, hook.working_dir, destroyed)
        else:
            self.log.info("Nothing to destroy in %s (workspace %s)", hook.working_dir, hook.workspace)
        return {"destroyed": destroyed, "count": result.removed}


class TerraformDriftCheckOperator(_TerraformBaseOperator):
    """
    Report whether real infrastructure or configuration has drifted from the Terraform state.

    .. seealso::
        :ref:`howto/operator:TerraformDriftCheckOperator`

    Runs ``terraform plan -detailed-exitcode``: exit code 2 means the plan is not empty, i.e. the
    configuration (with ``variables``) and the state disagree. With ``refresh_only`` it runs
    ``plan -refresh-only`` instead, which only reports objects changed outside Terraform and needs no
    variables that match the last apply.
    The XCom return value is ``{"drift": bool, "environment": str, "workspace": str,
    "summary": <plan summary dict>, "drifted_resources": [addresses changed outside Terraform],
    "report": str}``.

    :param working_dir: Directory of the root module. (templated)
    :param terraform_conn_id: Connection of type ``terraform`` (backend config, secret variables). (templated)
    :param backend_conn_id: PostgreSQL connection for the ``pg`` backend. (templated)
    :param environment: Name of the state and plan directory (default: name of ``working_dir``). (templated)
    :param workspace: Terraform workspace, created when missing. (templated)
    :param variables: Non-secret input variables. (templated)
    :param backend_config: Backend settings for ``init``. (templated)
    :param env: Extra environment variables for Terraform. (templated)
    :param plugin_dir: Provider mirror directory (default: the repository's ``.terraform-plugins``).
    :param terraform_bin: Terraform executable (default: the packaged binary).
    :param lock_timeout: How long to wait for the state lock.
    :param kill_grace_period: Seconds ``on_kill`` waits for Terraform to stop after SIGINT.
    :param fail_on_drift: Fail the task (after pushing the summary) when drift is found.
    :param refresh_only: Only compare the state with real infrastructure (``plan -refresh-only``).
    """

    def __init__(self, *, fail_on_drift: bool = False, refresh_only: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_on_drift = fail_on_drift
        self.refresh_only = refresh_only

    def run_terraform(self, hook: TerraformHook, context: Context) -> dict[str, Any]:
        plan_file = hook.default_plan_file(suffix=".drift.tfplan")
        try:
            result = hook.plan(plan_file=plan_file, detailed_exitcode=True, refresh_only=self.refresh_only)
        finally:
            plan_file.unlink(missing_ok=True)
        summary = result.summary
        report = {
            "drift": result.changes_present,
            "environment": hook.environment,
            "workspace": hook.workspace,
            "summary": summary.to_dict(),
            "drifted_resources": [rc.address for rc in summary.drift],
            "report": summary.markdown(title=f"Drift in {hook.environment}/{hook.workspace}"),
        }
        if result.changes_present:
            self.log.warning("Drift in %s (%s): %s", hook.working_dir, hook.workspace, summary.describe())
            if self.fail_on_drift:
                context["ti"].xcom_push(key="return_value", value=report)
                raise TerraformError(
                    f"drift detected in {hook.working_dir} (workspace {hook.workspace}): {summary.describe()}"
                )
        else:
            self.log.info("No drift in %s (%s)", hook.working_dir, hook.workspace)
        return report


class TerraformApprovalBranchOperator(BaseBranchOperator):
    """
    Route a saved plan to a human approval task or straight to apply.

    .. seealso::
        :ref:`howto/operator:terraform_plan_and_apply`

    :param plan_task_id: Task id of the :class:`TerraformPlanOperator` whose summary is checked.
    :param approval_task_id: Task to follow when any planned action is gated.
    :param apply_task_id: Task to follow otherwise.
    :param require_approval_for: Actions that need approval (``delete``, ``replace``, ``update``,
        ``create``); ``False`` or empty never asks.
    """

    template_fields: Sequence[str] = ("plan_task_id",)

    def __init__(
        self,
        *,
        plan_task_id: str,
        approval_task_id: str,
        apply_task_id: str,
        require_approval_for: Iterable[str] | bool | None = DEFAULT_APPROVAL_ACTIONS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plan_task_id = plan_task_id
        self.approval_task_id = approval_task_id
        self.apply_task_id = apply_task_id
        self.require_approval_for = (
            require_approval_for
            if isinstance(require_approval_for, bool | None)
            else tuple(require_approval_for)
        )
        # Fail at DAG parse time on a typo such as "destory".
        self._gated = approval_actions(self.require_approval_for)

    def choose_branch(self, context: Context) -> str:
        plan = context["ti"].xcom_pull(task_ids=self.plan_task_id)
        if not isinstance(plan, Mapping) or "summary" not in plan:
            raise TerraformError(f"task {self.plan_task_id!r} pushed no Terraform plan summary")
        gated = changes_needing_approval(PlanSummary.from_dict(plan["summary"]), self._gated)
        if gated:
            self.log.info("Plan needs approval for: %s", ", ".join(gated))
            return self.approval_task_id
        self.log.info("Plan has no gated changes; applying without approval")
        return self.apply_task_id


class TerraformPlanApprovalOperator(ApprovalOperator):
    """
    Ask a person to approve a saved Terraform plan; a plan that is not approved is deleted.

    .. seealso::
        :ref:`howto/operator:terraform_plan_and_apply`

    "Approve" lets the downstream apply run the plan exactly as reviewed. Any other outcome ("Reject",
    or a timeout without a default) first removes the saved plan file, which holds the variable values
    it was made with, so it neither lingers on disk nor can be applied later; then "Reject" skips the
    apply as :class:`~airflow.providers.standard.operators.hitl.ApprovalOperator` does.

    :param plan_task_id: Task id of the :class:`TerraformPlanOperator` whose plan is reviewed.
    :param kwargs: Arguments of ``ApprovalOperator`` (``subject``, ``body``, ``response_timeout``,
        ``assigned_users``, ``fail_on_reject``, ...).
    """

    def __init__(self, *, plan_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_task_id = plan_task_id

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        approved = "error" not in event and list(event.get("chosen_options") or ()) == [self.APPROVE]
        if not approved:
            # Before the parent skips the apply (or fails), so no outcome leaves the plan behind.
            self.discard_plan(context)
        return super().execute_complete(context=context, event=event)

    def discard_plan(self, context: Context) -> None:
        """Remove the plan file named in the plan task's XCom (missing file: nothing to do)."""
        plan = context["ti"].xcom_pull(task_ids=self.plan_task_id)
        plan_file = plan.get("plan_file") if isinstance(plan, Mapping) else None
        if not plan_file:
            self.log.warning("Task %s pushed no plan file; nothing to remove", self.plan_task_id)
            return
        Path(str(plan_file)).unlink(missing_ok=True)
        self.log.info("Plan not approved; removed saved plan %s", plan_file)


def terraform_plan_and_apply(
    *,
    group_id: str = "terraform",
    working_dir: str | Path,
    require_approval_for: Iterable[str] | bool | None = DEFAULT_APPROVAL_ACTIONS,
    approval_subject: str | None = None,
    approval_timeout: timedelta | None = None,
    assigned_users: Any = None,
    apply_kwargs: Mapping[str, Any] | None = None,
    **terraform_kwargs: Any,
) -> TaskGroup:
    """
    Build ``plan -> (approval needed?) -> TerraformPlanApprovalOperator -> apply`` as one task group.

    The tasks are ``<group_id>.plan``, ``<group_id>.needs_approval``, ``<group_id>.approve`` and
    ``<group_id>.apply`` (whose XCom holds the outputs). When the plan destroys or replaces anything
    (by default) the apply waits for a human decision in the Airflow UI; "Reject" removes the saved
    plan and skips the apply, and the run still succeeds (a rejection is a decision, not an error).
    A plan without gated changes skips the approval and is applied right away.
    With ``require_approval_for=False`` the group is just ``plan -> apply``.

    :param group_id: Task group id.
    :param working_dir: Directory of the root module. (templated)
    :param require_approval_for: Actions that need approval, or ``False`` for none.
    :param approval_subject: Headline of the approval request (templated; default: "Apply Terraform
        plan for <environment>/<workspace>?", from the plan).
    :param approval_timeout: How long to wait for a decision (after that the task fails).
    :param assigned_users: Users allowed to decide (HITL ``assigned_users``).
    :param apply_kwargs: Extra keyword arguments for the apply task only (e.g. ``keep_plan_file``).
    :param terraform_kwargs: Arguments shared by plan and apply (``variables``, ``workspace``,
        ``terraform_conn_id``, ``backend_conn_id``, ``environment``, ...).
    """
    gated = approval_actions(require_approval_for)
    with TaskGroup(group_id=group_id) as group:
        plan = TerraformPlanOperator(task_id="plan", working_dir=working_dir, **terraform_kwargs)
        plan_ref = f"ti.xcom_pull(task_ids='{plan.task_id}')"
        apply = TerraformApplyOperator(
            task_id="apply",
            working_dir=working_dir,
            plan_file=f"{{{{ {plan_ref}['plan_file'] }}}}",
            trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
            **terraform_kwargs,
            **dict(apply_kwargs or {}),
        )
        if not gated:
            plan >> apply
            return group
        approve_id = f"{group.group_id}.approve" if group.group_id else "approve"
        branch = TerraformApprovalBranchOperator(
            task_id="needs_approval",
            plan_task_id=plan.task_id,
            approval_task_id=approve_id,
            apply_task_id=apply.task_id,
            require_approval_for=tuple(action.value for action in sorted(gated, key=lambda a: a.value)),
        )
        # From the plan's XCom, not working_dir: a templated working_dir only has a name once rendered.
        default_subject = (
            f"Apply Terraform plan for {{{{ {plan_ref}['environment'] }}}}/{{{{ {plan_ref}['workspace'] }}}}?"
        )
        approve = TerraformPlanApprovalOperator(
            task_id="approve",
            plan_task_id=plan.task_id,
            subject=approval_subject or default_subject,
            body=f"{{{{ {plan_ref}['report'] }}}}",
            response_timeout=approval_timeout,
            assigned_users=assigned_users,
        )
        plan >> branch >> [approve, apply]
        approve >> apply
    return group
