"""Static checks of Terraform configurations whose providers cannot be installed (AWS, Helm).

``terraform validate`` needs every provider's schema, so configurations for clouds this machine cannot
reach are checked here instead, from the parsed HCL of each directory:

- every ``var.X``, ``local.X``, ``data.T.N`` and resource ``T.N`` referenced is declared;
- every declared variable is used;
- ``module.M.O`` names a declared module call and an output that module declares;
- module calls pass only variables the module declares and every variable it requires;
- files referenced through ``${path.module}/...`` exist.

Run ``python -m nuro_ml.terraform_support.static_check [DIR]`` (default: the repository's ``terraform/``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nuro_ml.terraform_support.config import ModuleConfig, unquote

_VAR = re.compile(r"(?<![\w.])var\.([A-Za-z_][\w-]*)")
_LOCAL = re.compile(r"(?<![\w.])local\.([A-Za-z_][\w-]*)")
_MODULE = re.compile(r"(?<![\w.])module\.([A-Za-z_][\w-]*)(?:\.([A-Za-z_][\w-]*))?")
_DATA = re.compile(r"(?<![\w.])data\.([a-z][a-z0-9_]*)\.([A-Za-z_][\w-]*)")
_RESOURCE = re.compile(r"(?<![\w.])([a-z][a-z0-9]*)_([a-z0-9_]+)\.([A-Za-z_][\w-]*)")
_PATH_MODULE_FILE = re.compile(r"\$\{path\.module\}/([^\"$]+)")
_MODULE_META_ARGUMENTS = {"source", "version", "providers", "count", "for_each", "depends_on"}


@dataclass(frozen=True)
class Problem:
    """One finding, located by directory and file where known."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            if not key.startswith("__"):
                yield from _strings(value)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _strings(item)


def _interpolations(text: str) -> Iterator[str]:
    """The expression parts of a string as python-hcl2 renders it (``${...}`` spans, or bare)."""
    if "${" not in text:
        if not text.startswith('"'):
            yield text
        return
    start = text.find("${")
    while start != -1:
        depth, index = 0, start + 1
        while index < len(text):
            if text[index] == "{":
                depth += 1
            elif text[index] == "}":
                depth -= 1
                if depth == 0:
                    break
            index += 1
        yield text[start + 2 : index]
        start = text.find("${", index)


def _expressions(node: Any) -> Iterator[str]:
    for text in _strings(node):
        yield from _interpolations(text)


def _provider_names(config: ModuleConfig) -> set[str]:
    names = {"null", "terraform"}
    for document in config.files.values():
        for terraform in document.get("terraform", ()) or ():
            for providers in terraform.get("required_providers", ()) or ():
                names.update(k for k in providers if not k.startswith("__"))
    return names


def _declared_in(config: ModuleConfig) -> dict[str, set[str]]:
    return {
        "var": set(config.variables),
        "local": set(config.locals),
        "resource": set(config.resources),
        "data": set(config.data_sources),
        "module": set(config.modules),
    }


def _module_source_dir(config: ModuleConfig, body: dict[str, Any]) -> Path | None:
    source = unquote(body.get("source", ""))
    if isinstance(source, str) and source.startswith(("./", "../")):
        return (config.directory / source).resolve()
    return None


def check_module(directory: Path, *, label: str | None = None) -> list[Problem]:
    """Check one directory of ``.tf`` files."""
    config = ModuleConfig.load(directory)
    where = label or str(directory)
    problems = [
        Problem(f"{where}/{name}", f"does not parse: {error}") for name, error in config.parse_errors.items()
    ]
    declared = _declared_in(config)
    providers = _provider_names(config)
    used_vars: set[str] = set()

    for filename, document in config.files.items():
        location = f"{where}/{filename}"
        for expression in _expressions(document):
            for name in _VAR.findall(expression):
                used_vars.add(name)
                if name not in declared["var"]:
                    problems.append(Problem(location, f"var.{name} is not declared"))
            for name in _LOCAL.findall(expression):
                if name not in declared["local"]:
                    problems.append(Problem(location, f"local.{name} is not declared"))
            for type_name, name in _DATA.findall(expression):
                if f"{type_name}.{name}" not in declared["data"]:
                    problems.append(Problem(location, f"data.{type_name}.{name} is not declared"))
            for prefix, rest, name in _RESOURCE.findall(expression):
                address = f"{prefix}_{rest}.{name}"
                if prefix in providers and address not in declared["resource"]:
                    problems.append(Problem(location, f"resource {address} is not declared"))
            for module_name, output in _MODULE.findall(expression):
                problems.extend(_check_module_reference(config, location, module_name, output))
        for text in _strings(document):
            for relative in _PATH_MODULE_FILE.findall(text):
                if not (config.directory / relative).exists():
                    problems.append(Problem(location, f"${{path.module}}/{relative} does not exist"))

    for name in sorted(declared["var"] - used_vars):
        problems.append(Problem(where, f"variable {name} is declared but never used"))
    for name, body in config.modules.items():
        problems.extend(_check_module_call(config, where, name, body))
    for name, body in config.outputs.items():
        if "value" not in body:
            problems.append(Problem(where, f"output {name} has no value"))
    return problems


def _check_module_reference(
    config: ModuleConfig, location: str, module_name: str, output: str
) -> list[Problem]:
    body = config.modules.get(module_name)
    if body is None:
        return [Problem(location, f"module.{module_name} is not declared")]
    source_dir = _module_source_dir(config, body)
    if (
        output
        and source_dir is not None
        and source_dir.is_dir()
        and output not in ModuleConfig.load(source_dir).outputs
    ):
        return [
            Problem(location, f"module.{module_name}.{output}: module {source_dir.name} has no such output")
        ]
    return []


def _check_module_call(config: ModuleConfig, where: str, name: str, body: dict[str, Any]) -> list[Problem]:
    source_dir = _module_source_dir(config, body)
    if source_dir is None:
        return []
    if not source_dir.is_dir() or not any(source_dir.glob("*.tf")):
        return [Problem(where, f"module {name}: source {unquote(body.get('source'))} has no .tf files")]
    child = ModuleConfig.load(source_dir)
    passed = {key for key in body if not key.startswith("__") and key not in _MODULE_META_ARGUMENTS}
    problems = [
        Problem(where, f"module {name}: argument {arg} is not a variable of {source_dir.name}")
        for arg in sorted(passed - set(child.variables))
    ]
    problems += [
        Problem(where, f"module {name}: required variable {required} of {source_dir.name} is not set")
        for required in sorted(child.required_variables() - passed)
    ]
    return problems


def module_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (itself included) that holds ``.tf`` files, skipping ``.terraform``."""
    found = {path.parent for path in root.rglob("*.tf") if ".terraform" not in path.parts}
    return sorted(found)


def check_tree(root: Path) -> list[Problem]:
    problems: list[Problem] = []
    for directory in module_dirs(root):
        problems.extend(check_module(directory, label=str(directory.relative_to(root.parent))))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print("usage: python -m nuro_ml.terraform_support.static_check [DIR]")
        return 0
    from nuro_ml import settings

    root = Path(args[0]).resolve() if args else settings.terraform_dir()
    problems = check_tree(root)
    for problem in problems:
        print(problem)
    print(f"{len(module_dirs(root))} Terraform directories checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
