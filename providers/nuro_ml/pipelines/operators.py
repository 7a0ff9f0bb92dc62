"""Operator short names, lazy class loading, and argument checks against constructor signatures.

A stage names its operator by short name (``ray_job``) or dotted class path. Classes are
imported only when a spec uses them, and each class is inspected once per process: which
keyword arguments its constructor (and, through ``**kwargs``, ``BaseOperator``) accepts,
which are required, and their annotated types.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

from nuro_ml.specs.issues import Problem, did_you_mean


@dataclass(frozen=True)
class OperatorEntry:
    """A short name: the class it stands for and the pipeline phase it usually belongs to."""

    class_path: str
    phase: str | None


#: Short names accepted in ``stages.<id>.operator``; any dotted path to a BaseOperator also works.
OPERATORS: dict[str, OperatorEntry] = {
    "terraform_apply": OperatorEntry("nuro_ml.operators.terraform.TerraformApplyOperator", "provision"),
    "terraform_plan": OperatorEntry("nuro_ml.operators.terraform.TerraformPlanOperator", "provision"),
    "terraform_drift_check": OperatorEntry(
        "nuro_ml.operators.terraform.TerraformDriftCheckOperator", "provision"
    ),
    "terraform_destroy": OperatorEntry("nuro_ml.operators.terraform.TerraformDestroyOperator", "teardown"),
    "mcap_to_parquet": OperatorEntry("nuro_ml.operators.spark.MCAPToParquetOperator", "etl"),
    "feast_apply": OperatorEntry("nuro_ml.operators.feast.FeastApplyOperator", "features"),
    "feast_materialize": OperatorEntry("nuro_ml.operators.feast.FeastMaterializeOperator", "features"),
    "gpu_capacity": OperatorEntry("nuro_ml.sensors.gpu_capacity.GpuCapacitySensor", "capacity"),
    "gpu_lease_release": OperatorEntry("nuro_ml.operators.capacity.GpuLeaseReleaseOperator", "teardown"),
    "ray_job": OperatorEntry("nuro_ml.operators.ray.RayJobOperator", "train"),
    "kuberay_job": OperatorEntry("nuro_ml.operators.kuberay.KubeRayJobOperator", "train"),
    "slurm_job": OperatorEntry("nuro_ml.operators.slurm.SlurmJobOperator", "train"),
    "bash": OperatorEntry("airflow.providers.standard.operators.bash.BashOperator", None),
    "empty": OperatorEntry("airflow.providers.standard.operators.empty.EmptyOperator", None),
}

#: Constructor arguments the compiler sets itself; a spec sets them through stage fields.
RESERVED_ARGS: dict[str, str] = {
    "task_id": "the stage's name is its task id",
    "dag": "the stage belongs to its pipeline's DAG",
    "task_group": "stages are not grouped",
    "retries": "use the stage's `retries` field",
    "outlets": "use the stage's `produces` field",
    "inlets": "use the stage's `consumes` field",
    "params": "declare parameters under the pipeline's `params`",
    "default_args": "use the pipeline's fields (owner, default_retries, retry_delay)",
    "doc_md": "use the stage's `doc` field",
}

_MISSING_HINT = object()


@dataclass(frozen=True)
class OperatorInfo:
    """What the compiler needs to know about an operator class."""

    name: str
    cls: type[Any]
    #: Every keyword the constructor accepts, own parameters first.
    accepted: tuple[str, ...]
    #: Parameters of the class itself (not inherited through ``**kwargs``), for messages.
    own: tuple[str, ...]
    required: frozenset[str]
    hints: Mapping[str, Any] = field(repr=False)
    _adapters: dict[str, TypeAdapter[Any] | None] = field(default_factory=dict, repr=False, compare=False)

    def adapter(self, name: str) -> TypeAdapter[Any] | None:
        """Pydantic adapter for a parameter's annotation (None when it cannot be checked)."""
        cache = self._adapters
        if name not in cache:
            hint = self.hints.get(name, _MISSING_HINT)
            adapter: TypeAdapter[Any] | None = None
            if hint is not _MISSING_HINT and hint is not Any:
                try:
                    adapter = TypeAdapter(hint)
                except (PydanticSchemaGenerationError, TypeError, NameError, AttributeError):
                    adapter = None
            cache[name] = adapter
        return cache[name]


class OperatorLoadError(Exception):
    """An operator name that does not resolve to an importable BaseOperator subclass."""


def resolve_path(name: str) -> str:
    """Short name -> dotted class path (dotted paths are returned as they are)."""
    if name in OPERATORS:
        return OPERATORS[name].class_path
    if "." in name:
        return name
    raise OperatorLoadError(
        f"unknown operator {name!r}{did_you_mean(name, OPERATORS)}; use one of "
        f"{', '.join(sorted(OPERATORS))} or a dotted class path"
    )


def default_phase(name: str) -> str | None:
    """The phase a short name usually belongs to (None for dotted paths)."""
    entry = OPERATORS.get(name)
    return entry.phase if entry else None


@functools.cache
def load(name: str) -> OperatorInfo:
    """Import and inspect an operator class, once per process."""
    from airflow.sdk import BaseOperator

    path = resolve_path(name)
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise OperatorLoadError(f"operator {name!r} ({path}) cannot be imported: {err}") from err
    cls = getattr(module, class_name, None)
    if cls is None:
        raise OperatorLoadError(f"operator {name!r}: module {module_name} has no class {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, BaseOperator)):
        raise OperatorLoadError(
            f"operator {name!r}: {path} is not an Airflow operator (BaseOperator subclass)"
        )
    return _inspect(name, cls)


def _inspect(name: str, cls: type[Any]) -> OperatorInfo:
    accepted: list[str] = []
    own: list[str] = []
    required: set[str] = set()
    hints: dict[str, Any] = {}
    # Follow **kwargs up the MRO: what a subclass does not name, it passes to its parent.
    for index, klass in enumerate(k for k in cls.__mro__ if "__init__" in vars(k)):
        init = vars(klass)["__init__"]
        try:
            signature = inspect.signature(init)
        except (TypeError, ValueError):
            break
        hints.update({k: v for k, v in _hints(init).items() if k not in hints})
        takes_kwargs = False
        for param in list(signature.parameters.values())[1:]:
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                takes_kwargs = True
                continue
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
                continue
            if param.name in accepted:
                continue
            accepted.append(param.name)
            if index == 0:
                own.append(param.name)
            if param.default is inspect.Parameter.empty:
                required.add(param.name)
        if not takes_kwargs:
            break
    return OperatorInfo(
        name=name,
        cls=cls,
        accepted=tuple(accepted),
        own=tuple(own),
        required=frozenset(required),
        hints=hints,
    )


def _hints(function: Any) -> dict[str, Any]:
    """Resolved annotations; names only imported for type checking are skipped one by one."""
    try:
        return typing.get_type_hints(function)
    except Exception:
        pass
    resolved: dict[str, Any] = {}
    namespace = dict(getattr(function, "__globals__", {}))
    for key, annotation in getattr(function, "__annotations__", {}).items():
        if not isinstance(annotation, str):
            resolved[key] = annotation
            continue
        try:
            resolved[key] = eval(annotation, namespace)
        except Exception:
            continue
    return resolved


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings(item)


def untemplated(task: Any, args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(argument, template)`` pairs whose Jinja template the built task will never render.

    A template is rendered only if it ends up in one of the task's ``template_fields``;
    attribute names may differ from constructor names (the capacity sensor stores ``pool`` as
    ``gpu_pool``), so the check looks for the template text in the templated attributes.
    """
    rendered = [text for name in task.template_fields for text in _strings(getattr(task, name, None))]
    missing = []
    for key, value in args.items():
        for text in _strings(value):
            if has_template(text) and not any(text in candidate for candidate in rendered):
                missing.append((key, text))
    return missing


def has_template(value: Any) -> bool:
    """True when a value contains a Jinja expression or statement anywhere."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(has_template(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_template(v) for v in value)
    return False


def check_args(
    info: OperatorInfo, args: Mapping[str, Any], loc: tuple[str | int, ...]
) -> tuple[dict[str, Any], list[Problem]]:
    """Check stage arguments against the operator's constructor.

    Returns the arguments converted to the annotated types where that is unambiguous (for
    example seconds to ``timedelta``) and the problems found: reserved or unknown names,
    missing required arguments and values of the wrong type. Values holding Jinja templates
    are passed through; :func:`untemplated` checks them on the built task.
    """
    problems: list[Problem] = []
    converted: dict[str, Any] = {}
    # A misspelt required argument is reported once, as the unknown name with its suggestion.
    suggested: set[str] = set()
    label = info.cls.__name__
    for key, value in args.items():
        where = (*loc, key)
        if key in RESERVED_ARGS:
            problems.append(Problem(where, f"{key!r} cannot be set in args: {RESERVED_ARGS[key]}", at="key"))
            continue
        if key not in info.accepted:
            suggested.update(difflib.get_close_matches(key, info.accepted, n=1, cutoff=0.6))
            problems.append(
                Problem(
                    where,
                    f"unknown parameter {key!r} for {label}{did_you_mean(key, info.accepted)}; "
                    f"its parameters: {', '.join(p for p in info.own if p not in RESERVED_ARGS)} "
                    "(plus BaseOperator arguments such as pool, queue, trigger_rule, execution_timeout)",
                    at="key",
                )
            )
            continue
        if has_template(value):
            # Checked once the task exists (see ``untemplated``): the value is rendered at run time.
            converted[key] = value
            continue
        adapter = info.adapter(key)
        if adapter is None:
            converted[key] = value
            continue
        try:
            converted[key] = adapter.validate_python(value)
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            problems.append(
                Problem(
                    where,
                    f"{label}.{key} expects {_describe(info.hints[key])}, got {value!r}: {first['msg']}",
                )
            )
    missing = sorted(info.required - set(args) - suggested - {"task_id"})
    for name in missing:
        problems.append(Problem((*loc,), f"{label} requires argument {name!r} (missing from args)", at="key"))
    return converted, problems


def _describe(hint: Any) -> str:
    text = getattr(hint, "__name__", None) if isinstance(hint, type) else None
    return text or str(hint).replace("typing.", "")
