"""A small evaluator for the CEL rules that CRDs carry in ``x-kubernetes-validations``.

Kubernetes evaluates these rules server-side with the full CEL language. The CRDs this
provider ships use a small part of it: field selection, ``has()``, boolean and comparison
operators, ``in`` on list literals, the ternary operator, ``size()`` and the ``all``,
``exists``, ``exists_one`` and ``filter`` macros. This module implements exactly that part
(plus a few string helpers), and refuses anything else at parse time, so an unsupported rule
is a loud error rather than a rule that silently passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?)
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|!=|<=|>=|&&|\|\||[!<>?:.,()\[\]+\-*/%])
    )""",
    re.VERBOSE,
)


class CelError(Exception):
    """A rule could not be parsed (unsupported syntax) or evaluated."""


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


def _tokenize(rule: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    rule = rule.strip()
    while pos < len(rule):
        match = _TOKEN.match(rule, pos)
        if match is None or match.end() == pos:
            raise CelError(f"unsupported CEL syntax at offset {pos}: {rule[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append(_Tok(kind, match.group(kind)))
        pos = match.end()
        while pos < len(rule) and rule[pos].isspace():
            pos += 1
    tokens.append(_Tok("end", ""))
    return tokens


# AST nodes are tuples: (tag, *children). Tags: lit, list, ident, select, has, call, method,
# macro, index, not, neg, and, or, cond, binop.
Node = tuple[Any, ...]

_MACROS = {"all", "exists", "exists_one", "filter"}
_METHODS = {"size", "startsWith", "endsWith", "contains", "matches"}
_FUNCTIONS = {"size", "has", "int", "string"}


class _Parser:
    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.tokens = _tokenize(rule)
        self.pos = 0

    def peek(self) -> _Tok:
        return self.tokens[self.pos]

    def take(self, text: str | None = None) -> _Tok:
        tok = self.tokens[self.pos]
        if text is not None and tok.text != text:
            raise CelError(f"expected {text!r} but found {tok.text or 'end of rule'!r} in rule {self.rule!r}")
        self.pos += 1
        return tok

    def parse(self) -> Node:
        node = self.conditional()
        if self.peek().kind != "end":
            raise CelError(f"unexpected {self.peek().text!r} in rule {self.rule!r}")
        return node

    def conditional(self) -> Node:
        node = self.disjunction()
        if self.peek().text == "?":
            self.take("?")
            then = self.conditional()
            self.take(":")
            otherwise = self.conditional()
            return ("cond", node, then, otherwise)
        return node

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self.peek().text == "||":
            self.take()
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.relation()
        while self.peek().text == "&&":
            self.take()
            node = ("and", node, self.relation())
        return node

    def relation(self) -> Node:
        node = self.addition()
        tok = self.peek()
        if tok.text in {"==", "!=", "<", "<=", ">", ">="} or (tok.kind == "ident" and tok.text == "in"):
            self.take()
            return ("binop", tok.text, node, self.addition())
        return node

    def addition(self) -> Node:
        node = self.unary()
        while self.peek().text in {"+", "-"}:
            op = self.take().text
            node = ("binop", op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.peek().text == "!":
            self.take()
            return ("not", self.unary())
        if self.peek().text == "-":
            self.take()
            return ("neg", self.unary())
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while True:
            tok = self.peek()
            if tok.text == ".":
                self.take()
                name = self.take().text
                if self.peek().text == "(":
                    if name in _MACROS:
                        self.take("(")
                        var = self.take().text
                        self.take(",")
                        body = self.conditional()
                        self.take(")")
                        node = ("macro", name, node, var, body)
                    elif name in _METHODS:
                        node = ("method", name, node, self.arguments())
                    else:
                        raise CelError(f"unsupported CEL method {name!r} in rule {self.rule!r}")
                else:
                    node = ("select", node, name)
            elif tok.text == "[":
                self.take()
                index = self.conditional()
                self.take("]")
                node = ("index", node, index)
            else:
                return node

    def arguments(self) -> list[Node]:
        self.take("(")
        args: list[Node] = []
        if self.peek().text != ")":
            args.append(self.conditional())
            while self.peek().text == ",":
                self.take()
                args.append(self.conditional())
        self.take(")")
        return args

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "number":
            return ("lit", float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind == "string":
            return ("lit", bytes(tok.text[1:-1], "utf-8").decode("unicode_escape"))
        if tok.text == "(":
            node = self.conditional()
            self.take(")")
            return node
        if tok.text == "[":
            items: list[Node] = []
            if self.peek().text != "]":
                items.append(self.conditional())
                while self.peek().text == ",":
                    self.take()
                    items.append(self.conditional())
            self.take("]")
            return ("list", items)
        if tok.kind == "ident":
            if tok.text in {"true", "false"}:
                return ("lit", tok.text == "true")
            if tok.text == "null":
                return ("lit", None)
            if self.peek().text == "(":
                if tok.text not in _FUNCTIONS:
                    raise CelError(f"unsupported CEL function {tok.text!r} in rule {self.rule!r}")
                args = self.arguments()
                if tok.text == "has":
                    if len(args) != 1 or args[0][0] != "select":
                        raise CelError(f"has() needs a field selection, in rule {self.rule!r}")
                    return ("has", args[0][1], args[0][2])
                return ("call", tok.text, args)
            return ("ident", tok.text)
        raise CelError(f"unexpected {tok.text or 'end of rule'!r} in rule {self.rule!r}")


@lru_cache(maxsize=512)
def compile_rule(rule: str) -> Node:
    """Parse a rule once; raises :class:`CelError` if it uses syntax outside the subset."""
    return _Parser(rule).parse()


def uses_old_self(rule: str) -> bool:
    """Transition rules (those that mention ``oldSelf``) only run on updates."""
    return re.search(r"\boldSelf\b", rule) is not None


_MISSING = object()


def _select(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        if name in value:
            return value[name]
        raise CelError(f"no such key: {name}")
    raise CelError(f"cannot select field {name!r} from {type(value).__name__}")


def _size(value: Any) -> int:
    if isinstance(value, str | list | dict):
        return len(value)
    raise CelError(f"size() of {type(value).__name__}")


def _truth(value: Any) -> bool:
    if not isinstance(value, bool):
        raise CelError(f"expected a bool, got {type(value).__name__}")
    return value


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _evaluate(node: Node, env: Mapping[str, Any]) -> Any:
    tag = node[0]
    if tag == "lit":
        return node[1]
    if tag == "list":
        return [_evaluate(item, env) for item in node[1]]
    if tag == "ident":
        if node[1] not in env:
            raise CelError(f"undeclared reference to {node[1]!r}")
        return env[node[1]]
    if tag == "select":
        return _select(_evaluate(node[1], env), node[2])
    if tag == "has":
        target = _evaluate(node[1], env)
        return isinstance(target, Mapping) and node[2] in target
    if tag == "index":
        container = _evaluate(node[1], env)
        key = _evaluate(node[2], env)
        try:
            return container[key]
        except (KeyError, IndexError, TypeError) as err:
            raise CelError(f"index {key!r}: {err}") from err
    if tag == "not":
        return not _truth(_evaluate(node[1], env))
    if tag == "neg":
        return -_evaluate(node[1], env)
    if tag == "and":
        # CEL's && is commutative over errors; short-circuit on a false left side is enough here.
        return _truth(_evaluate(node[1], env)) and _truth(_evaluate(node[2], env))
    if tag == "or":
        return _truth(_evaluate(node[1], env)) or _truth(_evaluate(node[2], env))
    if tag == "cond":
        return _evaluate(node[2], env) if _truth(_evaluate(node[1], env)) else _evaluate(node[3], env)
    if tag == "binop":
        op, left, right = node[1], _evaluate(node[2], env), _evaluate(node[3], env)
        if op == "==":
            return bool(left == right)
        if op == "!=":
            return bool(left != right)
        if op == "in":
            if isinstance(right, list | dict):
                return left in right
            raise CelError(f"'in' needs a list or map, got {type(right).__name__}")
        if op == "+":
            return left + right
        if op == "-":
            return left - right
        try:
            return _COMPARE[op](left, right)
        except TypeError as err:
            raise CelError(f"cannot compare {left!r} {op} {right!r}") from err
    if tag == "call":
        args = [_evaluate(arg, env) for arg in node[2]]
        if node[1] == "size":
            return _size(args[0])
        if node[1] == "int":
            return int(args[0])
        return str(args[0])
    if tag == "method":
        target = _evaluate(node[2], env)
        args = [_evaluate(arg, env) for arg in node[3]]
        name = node[1]
        if name == "size":
            return _size(target)
        if not isinstance(target, str):
            raise CelError(f"{name}() on {type(target).__name__}")
        if name == "startsWith":
            return target.startswith(args[0])
        if name == "endsWith":
            return target.endswith(args[0])
        if name == "contains":
            return args[0] in target
        return re.search(args[0], target) is not None
    if tag == "macro":
        name, target, var, body = node[1], _evaluate(node[2], env), node[3], node[4]
        items = list(target.keys()) if isinstance(target, Mapping) else target
        if not isinstance(items, list):
            raise CelError(f"{name}() on {type(target).__name__}")
        results = [_truth(_evaluate(body, {**env, var: item})) for item in items]
        if name == "filter":
            return [item for item, keep in zip(items, results, strict=True) if keep]
        if name == "all":
            return all(results)
        if name == "exists":
            return any(results)
        return results.count(True) == 1
    raise CelError(f"unknown node {tag!r}")


def evaluate(rule: str, self_value: Any, old_self: Any = _MISSING) -> bool:
    """Evaluate ``rule`` with ``self`` (and ``oldSelf`` on updates); True means the value is valid."""
    env: dict[str, Any] = {"self": self_value}
    if old_self is not _MISSING:
        env["oldSelf"] = old_self
    return _truth(_evaluate(compile_rule(rule), env))
