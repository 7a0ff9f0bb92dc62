"""The key of an Airflow task instance, and the names and ids derived from it.

Every remote side effect of a task instance is idempotent on (dag_id, run_id, task_id,
map_index): a retried try derives the same Ray submission id, RayJob name, Slurm job
comment, lease key, ETL run key and Terraform plan path, and so finds the work of an
earlier try instead of starting it again. :class:`TaskKey` is that key; the engines' id
formats are built from its parts:

- :meth:`TaskKey.format` (``dag_id/run_id/task_id/map_index``): lease and request keys,
  the Ray job metadata and the RayJob annotation recording the owner;
- :meth:`TaskKey.digest`: the hex suffix that makes a readable name unique;
- :meth:`TaskKey.quoted`: the same four parts, each percent-quoted (Slurm job comments);
- :meth:`TaskKey.joined`: the parts joined by a separator in a file-name-safe alphabet
  (ETL run keys);
- :func:`slug` with a :class:`NameRule`: the readable part of a name in the alphabet an
  engine allows (DNS labels, Ray ids, Slurm job names, path components).

These formats are stored by engines (Ray keeps submission ids, slurmctld keeps comments, the
ledger keeps lease keys), so they must not change: every one is pinned by a test.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote

#: Characters kept as they are in quoted parts (the rest, ``/`` included, is percent-quoted).
_QUOTE_SAFE = ":+-_.~"
_SEPARATOR = "/"


class _TaskInstanceLike(Protocol):
    dag_id: str
    run_id: str
    task_id: str


@dataclass(frozen=True)
class NameRule:
    """How one engine spells names: the characters it allows and what stands for the rest.

    :param disallowed: pattern of what is replaced (``[^a-z0-9]+`` replaces each run at once,
        ``[^a-z0-9]`` each character).
    :param replacement: what replaces a match.
    :param lower: lower-case the text first.
    :param squeeze: collapse runs of ``replacement`` (also runs present in the text).
    :param strip: characters removed from both ends, also after cutting to ``max_length``.
    :param max_length: longest result.
    :param empty: the result when nothing is left.
    """

    disallowed: re.Pattern[str]
    replacement: str
    lower: bool = False
    squeeze: bool = False
    strip: str = ""
    max_length: int | None = None
    empty: str = ""


#: DNS-1035 label characters (Kubernetes object names and label values).
DNS_LABEL = NameRule(re.compile(r"[^a-z0-9]+"), "-", lower=True, strip="-")
#: Ray submission ids: lower-case, ``_`` and ``-``, at most 64 characters of readable text.
RAY_ID = NameRule(re.compile(r"[^a-z0-9_-]+"), "-", lower=True, squeeze=True, strip="-_", max_length=64)
#: Slurm job names: letters, digits, ``_``, ``.`` and ``-`` (no spaces, ``|`` or ``/``).
SLURM_NAME = NameRule(re.compile(r"[^A-Za-z0-9_.-]+"), "_", max_length=80)
#: One path component (run ids contain ``:`` and ``+``); never empty, never ``.`` or ``..``.
PATH_COMPONENT = NameRule(re.compile(r"[^A-Za-z0-9._=-]+"), "_", strip="._", empty="_")
#: A file name kept character for character (each unsafe character becomes ``_``).
FILE_NAME = NameRule(re.compile(r"[^A-Za-z0-9_.-]"), "_")


def slug(text: str, rule: NameRule, *, max_length: int | None = None) -> str:
    """``text`` in the alphabet of ``rule``; ``max_length`` overrides the rule's."""
    if rule.lower:
        text = text.lower()
    text = rule.disallowed.sub(rule.replacement, text)
    if rule.squeeze and rule.replacement:
        text = re.sub(f"(?:{re.escape(rule.replacement)}){{2,}}", rule.replacement, text)
    if rule.strip:
        text = text.strip(rule.strip)
    limit = max_length if max_length is not None else rule.max_length
    if limit is not None:
        text = text[:limit]
        if rule.strip:
            text = text.rstrip(rule.strip)
    return text or rule.empty


def digest(text: str, length: int) -> str:
    """The first ``length`` hex digits of sha256 over ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


class TaskKeyError(ValueError):
    """A text that is not a task-instance key."""


@dataclass(frozen=True)
class TaskKey:
    """(dag_id, run_id, task_id, map_index) of a task instance; ``map_index`` -1 when not mapped."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    @classmethod
    def of(cls, ti: _TaskInstanceLike) -> TaskKey:
        """The key of a task instance (``context["ti"]``); an unset map index counts as -1."""
        map_index: Any = getattr(ti, "map_index", -1)
        return cls(
            str(ti.dag_id), str(ti.run_id), str(ti.task_id), -1 if map_index is None else int(map_index)
        )

    def for_task(self, task_id: str) -> TaskKey:
        """The key of another task of the same run (and map index)."""
        return TaskKey(self.dag_id, self.run_id, task_id, self.map_index)

    @property
    def mapped(self) -> bool:
        return self.map_index >= 0

    def format(self) -> str:
        """``dag_id/run_id/task_id/map_index``; :meth:`parse` reads it back."""
        return _SEPARATOR.join((self.dag_id, self.run_id, self.task_id, str(self.map_index)))

    def __str__(self) -> str:
        return self.format()

    def digest(self, length: int) -> str:
        """``length`` hex digits of sha256 over :meth:`format`: unique per task instance."""
        return digest(self.format(), length)

    def quoted(self) -> str:
        """:meth:`format` with each part percent-quoted, so no part holds ``/``, spaces or ``|``."""
        return _SEPARATOR.join(quote(part, safe=_QUOTE_SAFE) for part in self._parts())

    def joined(self, separator: str, rule: NameRule = FILE_NAME) -> str:
        """The parts joined by ``separator``, spelled by ``rule`` (one-way: not parsed back)."""
        return slug(separator.join(self._parts()), rule)

    @classmethod
    def parse(cls, text: str, *, quoted: bool = False) -> TaskKey:
        """Read back :meth:`format` (a run id may contain ``/``), or :meth:`quoted` if ``quoted``.

        :raises TaskKeyError: naming the text, when it is not ``dag_id/run_id/task_id/map_index``.
        """
        parts = text.split(_SEPARATOR)
        if len(parts) < 4 or (quoted and len(parts) != 4) or not (parts[0] and parts[-2]):
            raise TaskKeyError(
                f"{text!r} is not a task-instance key: expected dag_id/run_id/task_id/map_index"
            )
        try:
            map_index = int(parts[-1])
        except ValueError:
            raise TaskKeyError(
                f"{text!r} is not a task-instance key: map index {parts[-1]!r} is not an integer"
            ) from None
        run_id = _SEPARATOR.join(parts[1:-2])
        if quoted:
            return cls(unquote(parts[0]), unquote(run_id), unquote(parts[2]), map_index)
        return cls(parts[0], run_id, parts[-2], map_index)

    @classmethod
    def try_parse(cls, text: str) -> TaskKey | None:
        """:meth:`parse`, or None for a key not written by a task instance (a CLI request)."""
        try:
            return cls.parse(text)
        except TaskKeyError:
            return None

    def _parts(self) -> tuple[str, str, str, str]:
        return (self.dag_id, self.run_id, self.task_id, str(self.map_index))
