"""Hook that drives the Terraform CLI on one configuration directory.

The hook runs the real ``terraform`` binary (no wrapper library) non-interactively with
machine-readable output, streams Terraform's JSON events into the task log as readable lines, and turns
failures into :class:`~nuro_ml.exceptions.TerraformError` carrying Terraform's own diagnostics
(``file:line``).

State never lives in the source tree: the ``local`` backend is pointed at
``settings.data_dir()/terraform/<environment>/`` and the ``pg`` backend (state and locking in
PostgreSQL) gets its ``conn_str`` from an Airflow connection. Each hook instance has its own
``TF_DATA_DIR`` so parallel tasks never share ``.terraform``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

from airflow.sdk import BaseHook

from nuro_ml.exceptions import StalePlanError, TerraformError, TerraformStateLockedError
from nuro_ml.hooks.masking import mask_value, redact_text
from nuro_ml.task_key import TaskKey
from nuro_ml.terraform_support import commands
from nuro_ml.terraform_support.binary import find_terraform_binary
from nuro_ml.terraform_support.config import ModuleConfig
from nuro_ml.terraform_support.diagnostics import (
    Diagnostic,
    Severity,
    errors_only,
    format_diagnostics,
    parse_text_diagnostics,
)
from nuro_ml.terraform_support.events import EventCollector
from nuro_ml.terraform_support.layout import EnvironmentLayout, safe_component
from nuro_ml.terraform_support.plan import ChangeAction, PlanSummary, ResourceChange
from nuro_ml.terraform_support.plugins import default_plugin_dir, ensure_plugin_mirror
from nuro_ml.terraform_support.process import ProcessResult, TerraformProcessRunner
from nuro_ml.terraform_support.state import StateVersion, plan_prior_state, stale_reason

#: Terraform's own output (events, provisioner output) goes to this standard-library logger, which the
#: Airflow task log captures, after every registered secret has been redacted from it.
terraform_output_log = logging.getLogger("nuro_ml.terraform")

_STALE_PLAN_SUMMARY = "saved plan is stale"
_LOCK_SUMMARIES = ("error acquiring the state lock", "error locking state")
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", ""}


@dataclass(frozen=True)
class PlanResult:
    """A saved plan and what it would change."""

    plan_file: Path
    summary: PlanSummary
    #: With ``-detailed-exitcode``: whether Terraform exited 2 (changes present, i.e. drift).
    changes_present: bool


@dataclass(frozen=True)
class ApplyResult:
    """Counts Terraform reported at the end of an apply or destroy."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    #: Address -> action for every resource the run touched.
    resources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TerraformOutput:
    """One root-module output from ``terraform output -json``."""

    name: str
    value: Any
    sensitive: bool
    type: Any = None


@dataclass(frozen=True)
class ValidationResult:
    valid: bool
    diagnostics: tuple[Diagnostic, ...] = ()


def _drift_action(action: str) -> ChangeAction:
    try:
        return ChangeAction(action)
    except ValueError:
        return ChangeAction.UPDATE


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise TerraformError(f"{what} is not valid JSON: {err}") from None
    if not isinstance(value, Mapping):
        raise TerraformError(f"{what} must be an object, got {type(value).__name__}")
    return dict(value)


class TerraformHook(BaseHook):
    """
    Run Terraform commands on one configuration directory.

    .. seealso::
        :ref:`howto/connection:terraform` for the connection extras (``backend_config``,
        ``variables``, ``secret_variables``, ``env``).

    :param working_dir: Directory with the root module's ``.tf`` files.
    :param terraform_conn_id: Optional connection of type ``terraform``. Extras: ``backend_config``
        (object), ``variables`` (object), ``secret_variables`` (object; masked, passed as ``TF_VAR_*``),
        ``env`` (object of environment variables for Terraform and its providers; masked).
    :param backend_conn_id: Optional PostgreSQL connection whose URI becomes the ``pg`` backend's
        ``conn_str``.
    :param environment: Name of the environment, used for the state and plan directory
        (``settings.data_dir()/terraform/<environment>``) and the ``pg`` schema. Defaults to the name
        of ``working_dir``.
    :param workspace: Terraform workspace, selected (or created) before any plan or apply.
    :param variables: Input variables passed as ``-var``; they win over the connection's ``variables``.
    :param secret_variables: Input variables that are secrets; masked in logs and passed through the
        environment. They win over the connection's ``secret_variables``.
    :param backend_config: Backend settings passed to ``init``; they win over the connection's
        ``backend_config`` and over the defaults (state path for ``local``; ``schema_name`` for ``pg``).
    :param plugin_dir: Provider mirror for ``init -plugin-dir`` (default: the repository's
        ``.terraform-plugins``, laid out on first use from the packaged providers).
    :param terraform_bin: Terraform executable (default: the packaged one).
    :param lock_timeout: How long to wait for the state lock (``"120s"``, ``"5m"`` or seconds).
    :param run_key: Task instance the run belongs to; names the saved plan file.
    :param env: Extra environment variables for Terraform (not masked; use the connection for secrets).
    :param state_root: Base directory for per-environment state and plans (default
        ``settings.data_dir()/terraform``).
    """

    conn_name_attr = "terraform_conn_id"
    default_conn_name = "terraform_default"
    conn_type = "terraform"
    hook_name = "Terraform"

    def __init__(
        self,
        *,
        working_dir: str | Path,
        terraform_conn_id: str | None = None,
        backend_conn_id: str | None = None,
        environment: str | None = None,
        workspace: str = "default",
        variables: Mapping[str, Any] | None = None,
        secret_variables: Mapping[str, Any] | None = None,
        backend_config: Mapping[str, Any] | None = None,
        plugin_dir: str | Path | None = None,
        terraform_bin: str | None = None,
        lock_timeout: str | int = "120s",
        run_key: TaskKey | None = None,
        env: Mapping[str, str] | None = None,
        state_root: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.working_dir = Path(working_dir).expanduser().resolve()
        self.terraform_conn_id = terraform_conn_id
        self.backend_conn_id = backend_conn_id
        self.environment = environment or self.working_dir.name
        self.workspace = commands.check_name(workspace or "default", "workspace")
        self._variables = dict(variables or {})
        self._secret_variables = dict(secret_variables or {})
        self._backend_config = dict(backend_config or {})
        self._plugin_dir = Path(plugin_dir).resolve() if plugin_dir else None
        self._terraform_bin = terraform_bin
        self.lock_timeout = lock_timeout
        commands.lock_timeout_arg(lock_timeout)
        self.run_key = run_key
        self._extra_env = dict(env or {})
        self.layout = EnvironmentLayout.for_environment(
            self.environment, Path(state_root) if state_root else None
        )
        self._data_dir: Path | None = None
        self._runner: TerraformProcessRunner | None = None
        self._prepared = False
        self._interrupted = False

    # ----------------------------------------------------------------- connection and configuration
    @cached_property
    def connection_extras(self) -> dict[str, Any]:
        """Extras of the ``terraform`` connection (empty without one); secrets in it are masked."""
        if not self.terraform_conn_id:
            return {}
        extras = dict(self.get_connection(self.terraform_conn_id).extra_dejson)
        for key in ("secret_variables", "env"):
            for value in _as_dict(
                extras.get(key), f"connection {self.terraform_conn_id!r} extra {key!r}"
            ).values():
                mask_value(value)
        return extras

    def _extra_dict(self, key: str) -> dict[str, Any]:
        return _as_dict(
            self.connection_extras.get(key), f"connection {self.terraform_conn_id!r} extra {key!r}"
        )

    @cached_property
    def variables(self) -> dict[str, Any]:
        return {**self._extra_dict("variables"), **self._variables}

    @cached_property
    def secret_variables(self) -> dict[str, Any]:
        secrets = {**self._extra_dict("secret_variables"), **self._secret_variables}
        for value in secrets.values():
            mask_value(value)
        return secrets

    @cached_property
    def config(self) -> ModuleConfig:
        return ModuleConfig.load(self.working_dir)

    def _pg_conn_str(self) -> str:
        if not self.backend_conn_id:
            raise TerraformError(
                f"{self.working_dir} uses the pg backend but no conn_str is configured: set backend_conn_id "
                "to a PostgreSQL connection or backend_config.conn_str in the terraform connection"
            )
        conn = self.get_connection(self.backend_conn_id)
        if conn.password:
            mask_value(conn.password)
        sslmode = conn.extra_dejson.get("sslmode") or (
            "disable" if (conn.host or "") in _LOOPBACK_HOSTS else "require"
        )
        auth = quote(conn.login or "", safe="")
        if conn.password:
            auth += ":" + quote(conn.password, safe="")
        netloc = f"{auth}@{conn.host or 'localhost'}:{conn.port or 5432}"
        return f"postgres://{netloc}/{quote(conn.schema or 'postgres')}?sslmode={quote(str(sslmode))}"

    @cached_property
    def backend_settings(self) -> dict[str, Any]:
        """Backend settings for ``init``: defaults, then the connection's, then the explicit ones."""
        from_connection = self._extra_dict("backend_config")
        merged = {**from_connection, **self._backend_config}
        backend = self.config.backend_type
        if backend == "local":
            merged.setdefault("path", str(self.layout.state_file))
            merged.setdefault("workspace_dir", str(self.layout.workspace_dir))
        elif backend == "pg":
            if "conn_str" not in merged:
                merged["conn_str"] = self._pg_conn_str()
            merged.setdefault(
                "schema_name", f"terraform_{safe_component(self.environment).replace('-', '_')}"
            )
        for key in ("conn_str", "password", "access_key", "secret_key", "token"):
            if merged.get(key):
                mask_value(merged[key])
        return merged

    @cached_property
    def plugin_dir(self) -> Path:
        return (
            self._plugin_dir if self._plugin_dir is not None else ensure_plugin_mirror(default_plugin_dir())
        )

    @cached_property
    def terraform_bin(self) -> str:
        return find_terraform_binary(self._terraform_bin)

    @property
    def data_dir(self) -> Path:
        """This hook's private ``TF_DATA_DIR`` (created on first use, removed by :meth:`close`)."""
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix=f"nuro-tf-{safe_component(self.environment)}-"))
        return self._data_dir

    @property
    def runner(self) -> TerraformProcessRunner:
        if self._runner is None:
            env = commands.terraform_env(
                data_dir=self.data_dir,
                secret_variables=self.secret_variables,
                extra_env={**{k: str(v) for k, v in self._extra_dict("env").items()}, **self._extra_env},
            )
            self._runner = TerraformProcessRunner(binary=self.terraform_bin, cwd=self.working_dir, env=env)
        return self._runner

    def default_plan_file(self, *, suffix: str = ".tfplan") -> Path:
        key = self.run_key or TaskKey(dag_id="manual", run_id=f"pid-{os.getpid()}", task_id="terraform")
        return self.layout.plan_file(self.workspace, key, suffix=suffix)

    # ----------------------------------------------------------------------------- running commands
    def _emit(self, level: int, text: str) -> None:
        terraform_output_log.log(level, "%s", redact_text(text))

    def _run(
        self, what: str, args: list[str], *, stream: bool
    ) -> tuple[ProcessResult, EventCollector | None]:
        """Run one command; with ``stream`` its output is logged live (JSON events rendered)."""
        collector = EventCollector(
            on_progress=lambda text: self._emit(logging.INFO, text),
            what=f"terraform {what} {self.environment}",
        )

        def on_line(line: str) -> None:
            rendered = collector.feed(line)
            if collector.outputs:
                # apply's "outputs" event carries sensitive values in clear; mask them before anything
                # (a provisioner, an error message) can echo them.
                for meta in collector.outputs.values():
                    if isinstance(meta, Mapping) and meta.get("sensitive"):
                        mask_value(meta.get("value"))
            if rendered is not None:
                self._emit(rendered.level, rendered.text)

        def on_text_line(line: str) -> None:
            if line.strip():
                self._emit(logging.INFO, line)

        if self._interrupted:
            raise TerraformError(
                f"terraform {what} not started in {self.working_dir}: the run was interrupted"
            )
        json_output = "-json" in args
        self.log.debug("Running terraform %s in %s", what, self.working_dir)
        result = self.runner.run(
            args, on_stdout_line=(on_line if json_output else on_text_line) if stream else None
        )
        return result, (collector if json_output and stream else None)

    def _fail(self, what: str, result: ProcessResult, collector: EventCollector | None = None) -> NoReturn:
        diagnostics = collector.errors if collector is not None else []
        if not diagnostics:
            # Text-mode commands (init, workspace) and failures before Terraform's JSON view starts.
            stdout_text = result.stdout if collector is None else "\n".join(collector.non_json)
            diagnostics = errors_only(parse_text_diagnostics(result.stderr + "\n" + stdout_text))
        detail = format_diagnostics(diagnostics) or (result.stderr.strip() or result.stdout.strip()[-4000:])
        if result.interrupted:
            header = f"terraform {what} in {self.working_dir} was interrupted (exit code {result.returncode})"
        else:
            header = f"terraform {what} failed in {self.working_dir} (exit code {result.returncode})"
        message = redact_text(f"{header}:\n{detail}" if detail else header)
        summaries = " ".join(d.summary.lower() for d in diagnostics)
        if _STALE_PLAN_SUMMARY in summaries:
            raise StalePlanError(
                message + "\nThe state changed after this plan was made; plan again and review the new plan."
            )
        if any(s in summaries for s in _LOCK_SUMMARIES):
            raise TerraformStateLockedError(message)
        raise TerraformError(message)

    # ---------------------------------------------------------------------------------- preparation
    def _check_working_dir(self) -> None:
        if not self.working_dir.is_dir():
            raise TerraformError(f"Terraform working directory {self.working_dir} does not exist")
        if not any(self.working_dir.glob("*.tf")) and not any(self.working_dir.glob("*.tf.json")):
            raise TerraformError(f"Terraform working directory {self.working_dir} contains no .tf files")

    def _check_secret_variable_names(self) -> None:
        if not self.secret_variables or self.config.parse_errors or not self.config.files:
            # Unparseable files: let Terraform report its own diagnostic with file and line.
            return
        declared = set(self.config.variables)
        unknown = sorted(set(self.secret_variables) - declared)
        if unknown:
            raise TerraformError(
                f"secret variable(s) {', '.join(unknown)} are not declared in {self.working_dir} "
                f"(declared: {', '.join(sorted(declared)) or 'none'})"
            )

    def _write_backend_config(self) -> Path | None:
        settings = self.backend_settings
        if not settings:
            return None
        path = self.data_dir / "backend.tfbackend"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(commands.backend_config_text(settings))
        return path

    def init(self) -> None:
        """``terraform init`` against the provider mirror and the configured backend."""
        self._check_working_dir()
        self._check_secret_variable_names()
        if self.config.backend_type == "local":
            self.layout.root.mkdir(parents=True, exist_ok=True)
        args = commands.init_args(
            plugin_dirs=[self.plugin_dir],
            backend_config_file=self._write_backend_config(),
            lockfile_readonly=(self.working_dir / ".terraform.lock.hcl").is_file(),
        )
        result, _ = self._run("init", args, stream=True)
        if result.returncode != 0 and self._concurrent_setup_race(result):
            # Two first inits on one pg database race on CREATE ... IF NOT EXISTS; the loser retries.
            self.log.warning("terraform init raced another init creating the state schema; retrying")
            result, _ = self._run("init", args, stream=True)
        if result.returncode != 0:
            self._fail("init", result)

    def _concurrent_setup_race(self, result: ProcessResult) -> bool:
        text = (result.stderr + result.stdout).lower()
        return self.config.backend_type == "pg" and (
            "duplicate key value violates unique constraint" in text or "already exists" in text
        )

    def select_workspace(self) -> None:
        """Select ``workspace``, creating it when it does not exist yet."""
        if self.workspace == "default":
            return
        result, _ = self._run(
            "workspace select", commands.workspace_select_args(self.workspace), stream=False
        )
        if result.returncode == 0:
            return
        created, _ = self._run(
            "workspace new",
            commands.workspace_new_args(self.workspace, lock_timeout=self.lock_timeout),
            stream=False,
        )
        if created.returncode == 0:
            self.log.info("Created Terraform workspace %s", self.workspace)
            return
        # Another task may have created it between our select and new.
        again, _ = self._run("workspace select", commands.workspace_select_args(self.workspace), stream=False)
        if again.returncode != 0:
            self._fail("workspace new", created)

    def prepare(self) -> None:
        """Init and select the workspace once per hook."""
        if self._prepared:
            return
        self.init()
        self.select_workspace()
        self._prepared = True

    # ------------------------------------------------------------------------------------- commands
    def validate(self, *, raise_on_error: bool = True) -> ValidationResult:
        """``terraform validate``; raises :class:`TerraformError` on errors unless told not to."""
        self.prepare()
        result, _ = self._run("validate", commands.validate_args(), stream=False)
        try:
            document = json.loads(result.stdout)
        except json.JSONDecodeError:
            self._fail("validate", result)
        diagnostics = tuple(Diagnostic.from_json(d) for d in document.get("diagnostics") or ())
        for diagnostic in diagnostics:
            self._emit(
                logging.ERROR if diagnostic.severity is Severity.ERROR else logging.WARNING,
                diagnostic.format(),
            )
        outcome = ValidationResult(valid=bool(document.get("valid")), diagnostics=diagnostics)
        if raise_on_error and not outcome.valid:
            raise TerraformError(
                redact_text(
                    f"terraform validate found errors in {self.working_dir}:\n"
                    + format_diagnostics(errors_only(diagnostics))
                )
            )
        return outcome

    def show_plan(self, plan_file: str | Path) -> PlanSummary:
        """Change summary of a saved plan (``terraform show -json``)."""
        result, _ = self._run("show", commands.show_plan_args(Path(plan_file)), stream=False)
        if result.returncode != 0:
            self._fail("show", result)
        try:
            return PlanSummary.from_show_json(json.loads(result.stdout))
        except json.JSONDecodeError as err:
            raise TerraformError(f"terraform show -json {plan_file} printed invalid JSON: {err}") from None

    def plan(
        self,
        *,
        plan_file: str | Path | None = None,
        destroy: bool = False,
        detailed_exitcode: bool = False,
        refresh_only: bool = False,
    ) -> PlanResult:
        """Plan into a saved plan file and summarise it.

        The plan is written under a temporary name and renamed into place, so a reader never sees a
        half-written plan, and it is readable by its owner only (it contains variable values).
        """
        self.prepare()
        target = Path(plan_file) if plan_file else self.default_plan_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        args = commands.plan_args(
            out=partial,
            variables=self.variables,
            lock_timeout=self.lock_timeout,
            destroy=destroy,
            detailed_exitcode=detailed_exitcode,
            refresh_only=refresh_only,
        )
        result, collector = self._run("plan", args, stream=True)
        ok = {0, 2} if detailed_exitcode else {0}
        if result.returncode not in ok or not partial.exists():
            partial.unlink(missing_ok=True)
            self._fail("plan", result, collector)
        partial.chmod(0o600)
        os.replace(partial, target)
        summary = self.show_plan(target)
        if collector is not None and collector.drifted and not summary.drift:
            # Terraform 1.0 reports drift only as UI events, not in `show -json`.
            summary = dataclasses.replace(
                summary,
                drift=tuple(
                    ResourceChange(address=addr, action=_drift_action(action))
                    for addr, action in sorted(collector.drifted.items())
                ),
            )
        self.log.info("Saved plan %s: %s", target, summary.describe())
        # Terraform 1.0 exits 2 for every -refresh-only plan, changed or not: trust the content. A
        # refresh-only plan only ever changes what the state records about objects that drifted.
        changes_present = bool(summary.drift) if refresh_only else summary.has_changes or bool(summary.drift)
        return PlanResult(
            plan_file=target,
            summary=summary,
            changes_present=(result.returncode == 2 and changes_present)
            if detailed_exitcode
            else changes_present,
        )

    def apply(self, *, plan_file: str | Path | None = None) -> ApplyResult:
        """Apply a saved plan, or plan and apply in one step when no plan file is given.

        A saved plan made against an older state raises :class:`StalePlanError` and changes nothing.
        """
        self.prepare()
        saved = Path(plan_file) if plan_file else None
        if saved is not None:
            if not saved.is_file():
                raise TerraformError(
                    f"saved plan {saved} does not exist (a plan is removed once applied or rejected)"
                )
            self.check_plan_is_current(saved)
        args = commands.apply_args(
            lock_timeout=self.lock_timeout,
            plan_file=saved,
            variables=None if saved else self.variables,
        )
        result, collector = self._run("apply", args, stream=True)
        if result.returncode != 0:
            self._fail("apply", result, collector)
        return self._apply_result(collector)

    def state_version(self) -> StateVersion:
        """Lineage and serial of the workspace's current state (``terraform state pull``)."""
        self.prepare()
        result, _ = self._run("state pull", commands.state_pull_args(), stream=False)
        if result.returncode != 0:
            self._fail("state pull", result)
        try:
            return StateVersion.from_json_text(result.stdout)
        except (json.JSONDecodeError, ValueError) as err:
            raise TerraformError(f"terraform state pull printed an unreadable state: {err}") from None

    def check_plan_is_current(self, plan_file: Path) -> None:
        """Raise :class:`StalePlanError` when the state changed since ``plan_file`` was made."""
        prior = plan_prior_state(plan_file)
        if prior is None:
            # Not a plan file we can read: Terraform's own check (and error) applies.
            return
        reason = stale_reason(prior, self.state_version())
        if reason is not None:
            raise StalePlanError(
                f"Saved plan is stale: {plan_file} cannot be applied to {self.environment}/{self.workspace} "
                f"because {reason}. Nothing was applied; plan again and review the new plan."
            )

    def destroy(self) -> ApplyResult:
        """Destroy everything in the workspace's state; a no-op when the state is empty."""
        self.prepare()
        args = commands.destroy_args(variables=self.variables, lock_timeout=self.lock_timeout)
        result, collector = self._run("destroy", args, stream=True)
        if result.returncode != 0:
            self._fail("destroy", result, collector)
        return self._apply_result(collector)

    @staticmethod
    def _apply_result(collector: EventCollector | None) -> ApplyResult:
        if collector is None:
            return ApplyResult()
        counts = collector.change_summary or {}
        return ApplyResult(
            added=int(counts.get("add", 0)),
            changed=int(counts.get("change", 0)),
            removed=int(counts.get("remove", 0)),
            resources=dict(collector.planned_changes),
        )

    def outputs(self) -> dict[str, TerraformOutput]:
        """Root-module outputs; sensitive values are registered with the secrets masker."""
        self.prepare()
        result, _ = self._run("output", commands.output_args(), stream=False)
        if result.returncode != 0:
            self._fail("output", result)
        try:
            raw = json.loads(result.stdout or "{}")
        except json.JSONDecodeError as err:
            raise TerraformError(f"terraform output -json printed invalid JSON: {err}") from None
        outputs = {}
        for name, meta in raw.items():
            output = TerraformOutput(
                name=name,
                value=meta.get("value"),
                sensitive=bool(meta.get("sensitive")),
                type=meta.get("type"),
            )
            if output.sensitive:
                mask_value(output.value)
            outputs[name] = output
        return outputs

    # ------------------------------------------------------------------------------------ lifecycle
    def interrupt(self, *, grace_period: float = 60.0) -> bool:
        """SIGINT the running Terraform command so it stops cleanly and releases its state lock."""
        self._interrupted = True
        if self._runner is None:
            return False
        return self._runner.interrupt(grace_period=grace_period)

    def close(self) -> None:
        """Remove this hook's ``TF_DATA_DIR`` (provider copies and cached backend settings)."""
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
        self._data_dir = None
        self._runner = None
        self._prepared = False

    def __enter__(self) -> TerraformHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def test_connection(self) -> tuple[bool, str]:
        """Check that Terraform runs and that the configuration initialises."""
        try:
            self.init()
        except TerraformError as err:
            return False, str(err)
        finally:
            self.close()
        return True, f"terraform init succeeded in {self.working_dir}"
