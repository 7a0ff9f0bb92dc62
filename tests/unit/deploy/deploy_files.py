"""Reading the deployment assets the way their tools do: Compose files with variable
interpolation, Dockerfiles with line continuations and ARG defaults, multi-document YAML."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import shlex
import tomllib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
DOCKER_DIR = REPO / "docker"
COMPOSE_FILE = DOCKER_DIR / "docker-compose.yaml"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
HELM_DIR = REPO / "deploy" / "helm"
KUEUE_DIR = HELM_DIR / "kueue"
SOURCE_DIRS = ("providers/nuro_ml", "dags", "workloads", "plugins", "feature_repo")

#: Values for the variables the Compose file requires, as an operator's .env would set them.
COMPOSE_TEST_ENV = {
    "POSTGRES_PASSWORD": "pg-secret",
    "AIRFLOW_FERNET_KEY": "fernet-secret",
    "AIRFLOW_API_SECRET_KEY": "api-secret",
    "AIRFLOW_JWT_SECRET": "jwt-secret",
    "AIRFLOW_PASSWORDS_FILE": "/etc/nuro-ml/passwords.json",
    "NURO_ML_METRICS_TOKEN": "metrics-secret",
}


class InterpolationError(ValueError):
    """A required variable (``${VAR:?message}``) is unset, or the syntax is not Compose's."""


_TOKEN = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.DOTALL)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?err}``, ``${VAR:+alt}``, ``$$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("named"):
            return env.get(match.group("named"), "")
        parsed = _BRACED.match(match.group("braced"))
        if parsed is None:
            raise InterpolationError(f"invalid interpolation {match.group(0)!r}")
        name, op, arg = parsed.group("name"), parsed.group("op"), parsed.group("arg") or ""
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return interpolate(arg, env) if empty else str(value)
        if op in (":?", "?"):
            if empty:
                raise InterpolationError(f"required variable {name} is not set: {arg}")
            return str(value)
        if op in (":+", "+"):
            return "" if empty else interpolate(arg, env)
        return value or ""

    return _TOKEN.sub(substitute, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Compose file with YAML anchors merged and variables interpolated from ``env``."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return interpolate_tree(raw, COMPOSE_TEST_ENV if env is None else env)  # type: ignore[no-any-return]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a mapping (Compose allows a mapping or ``KEY=VALUE`` items)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """``{target: condition}`` from the short (list) or long (mapping) form."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def healthcheck_argv(service: Mapping[str, Any]) -> list[str] | None:
    """The healthcheck as an argv (``CMD`` form) or shell words (``CMD-SHELL`` form)."""
    test = (service.get("healthcheck") or {}).get("test")
    if test is None:
        return None
    if isinstance(test, str):
        return shlex.split(test)
    kind, *rest = test
    if kind == "CMD":
        return list(rest)
    if kind == "CMD-SHELL":
        return shlex.split(" ".join(rest))
    raise AssertionError(f"unknown healthcheck form {kind!r}")


def container_ports(service: Mapping[str, Any]) -> set[int]:
    """Ports the service declares inside its container (``expose`` and the target of ``ports``)."""
    ports = {int(str(p).split("/")[0]) for p in service.get("expose") or []}
    for mapping in service.get("ports") or []:
        ports.add(int(str(mapping).split(":")[-1].split("/")[0]))
    return ports


def published_ports(service: Mapping[str, Any]) -> list[int]:
    return [int(str(mapping).split(":")[-2]) for mapping in service.get("ports") or [] if ":" in str(mapping)]


def strings_in(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings_in(value)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, as BuildKit reads them."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        text = " ".join(part for part in pending if part)
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = []
    assert not pending, f"{path}: unterminated continuation at line {start}"
    return instructions


def dockerfile_stages(path: Path = DOCKERFILE) -> list[tuple[str, str | None, list[Instruction]]]:
    """``(image, stage name, instructions)`` per stage, with global ARG defaults substituted."""
    global_args: dict[str, str] = {}
    stages: list[tuple[str, str | None, list[Instruction]]] = []
    for ins in dockerfile_instructions(path):
        if ins.keyword == "ARG" and not stages:
            arg, _, default = ins.args.partition("=")
            global_args[arg] = default
        elif ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            image = interpolate(words[0], global_args)
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append((image, stage, []))
        else:
            assert stages, f"{path}:{ins.line}: {ins.keyword} before the first FROM"
            stages[-1][2].append(ins)
    return stages


def dockerfile_global_args(path: Path = DOCKERFILE) -> dict[str, str]:
    args: dict[str, str] = {}
    for ins in dockerfile_instructions(path):
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            args[name] = default
    return args


def locked_version(package: str) -> str:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    for entry in lock["package"]:
        if entry["name"] == package:
            return str(entry["version"])
    raise AssertionError(f"{package} is not in uv.lock")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@cache
def env_names_read_by_code() -> frozenset[str]:
    """Every ``NURO_ML_*`` name written as a string literal in the platform's Python code."""
    names: set[str] = set()
    for folder in SOURCE_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and re.fullmatch(r"NURO_ML_[A-Z0-9_]*[A-Z0-9]", node.value)
                ):
                    names.add(node.value)
    return frozenset(names)


@cache
def feast_env_names() -> frozenset[str]:
    from nuro_ml.features.config import ENV_PREFIX, FeastSettings

    return frozenset(ENV_PREFIX + name.upper() for name in FeastSettings.model_fields)


def is_read_by_code(name: str) -> bool:
    return name in env_names_read_by_code() or name in feast_env_names()


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def parse_click_command(group: Any, prog: str, args: Sequence[str]) -> Any:
    """Parse ``args`` with a click group and its sub-command, without invoking anything.

    Raises ``click.ClickException`` (usage errors, unknown options, bad values) like the real CLI.
    """
    ctx = group.make_context(prog, list(args))
    with warnings.catch_warnings():
        # Click 8.x keeps the sub-command name apart (deprecated attribute); 9.x leaves it in args.
        warnings.simplefilter("ignore", DeprecationWarning)
        head = list(getattr(ctx, "protected_args", []) or [])
    name, command, rest = group.resolve_command(ctx, [*head, *ctx.args])
    assert command is not None, f"{prog}: no sub-command in {list(args)}"
    return command.make_context(name or "", list(rest), parent=ctx)


def check_python(argv: list[str]) -> None:
    """``python -m module`` must be importable; ``python -c code`` must name real modules and attributes."""
    assert argv[0] == "python" and argv[1] in ("-m", "-c"), argv
    if argv[1] == "-m":
        assert importlib.util.find_spec(argv[2]) is not None, f"no module {argv[2]}"
        return
    tree = ast.parse(argv[2])
    names: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name] = importlib.import_module(alias.name)
    for node in ast.walk(tree):
        # Obj().method() and Obj.attr: the attribute must exist on the imported object.
        if isinstance(node, ast.Attribute):
            base = node.value.func if isinstance(node.value, ast.Call) else node.value
            if isinstance(base, ast.Name) and base.id in names:
                assert hasattr(names[base.id], node.attr), f"{base.id} has no attribute {node.attr}"


def check_nuro_ml(argv: list[str]) -> None:
    from nuro_ml.cli import build_parser

    assert argv[0] == "nuro-ml"
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        raise AssertionError(f"nuro-ml rejects {argv[1:]}") from exc
