"""Where recordings lie: path templates, rosbag2 folders, and placing files by their own records.

A template is a path relative to the input root with placeholders:

* ``{date}``: a day as ``YYYY-MM-DD``; ``{date:%Y_%m_%d}`` takes any ``strftime`` form of
  ``%Y %m %d`` (plus ``%H %M %S``, which only have to match);
* ``{vehicle}``: one path component, the vehicle id;
* ``{drive}``: the drive id (default: the file name without ``.mcap``);
* ``*`` any characters within a component, ``**`` any number of components.

Presets: ``hive`` (``date={date}/vehicle={vehicle}/{drive}.mcap``, the default), ``vehicle-date``
(``{vehicle}/{date}/{drive}.mcap``) and ``rosbag2``
(``{vehicle}/rosbag2_{date:%Y_%m_%d}-*/{drive}.mcap``, the folders ``ros2 bag record`` makes,
split files ``*_0.mcap``, ``*_1.mcap``...). A template without ``{date}`` places each file by
the start time of its messages; one without ``{vehicle}`` by its MCAP metadata (a ``vehicle_id``
or ``vehicle`` key in any metadata record).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path

PRESETS = {
    "hive": "date={date}/vehicle={vehicle}/{drive}.mcap",
    "vehicle-date": "{vehicle}/{date}/{drive}.mcap",
    "rosbag2": "{vehicle}/rosbag2_{date:%Y_%m_%d}-*/{drive}.mcap",
}
_FIELD = re.compile(r"\{(date|vehicle|drive)(?::([^}]*))?\}|\*\*/|\*\*|\*|[^{*]+|\{[^}]*\}?")
_STRFTIME = {"%Y": r"\d{4}", "%m": r"\d{2}", "%d": r"\d{2}", "%H": r"\d{2}", "%M": r"\d{2}", "%S": r"\d{2}"}
VEHICLE_KEYS = ("vehicle_id", "vehicle")


class LayoutError(ValueError):
    """A path template is malformed, or a file cannot be placed."""


@dataclass(frozen=True)
class Placed:
    """A recording and its partition keys."""

    path: str
    day: str
    vehicle: str
    drive: str


@dataclass(frozen=True)
class PathTemplate:
    """A compiled path template (see the module docstring)."""

    text: str

    @classmethod
    def of(cls, template: str | None) -> PathTemplate:
        return cls(PRESETS.get(template or "hive", template or PRESETS["hive"]))

    @cached_property
    def _compiled(self) -> tuple[re.Pattern[str], str]:
        if not self.text.endswith(".mcap") or self.text.startswith("/"):
            raise LayoutError(f"path template {self.text!r} must be relative and end in .mcap")
        pattern, date_format, pos, seen = "", "%Y-%m-%d", 0, set()
        for m in _FIELD.finditer(self.text):
            token = m.group(0)
            if m.group(1):
                name = m.group(1)
                if name in seen:
                    raise LayoutError(f"path template {self.text!r} uses {{{name}}} twice")
                seen.add(name)
                if name == "date":
                    date_format = m.group(2) or date_format
                    body = re.escape(date_format)
                    for code, rx in _STRFTIME.items():
                        body = body.replace(re.escape(code), rx)
                    if "%" in body:
                        raise LayoutError(
                            f"path template {self.text!r}: {{date:{date_format}}} may only use "
                            "%Y %m %d %H %M %S"
                        )
                    pattern += f"(?P<date>{body})"
                else:
                    pattern += f"(?P<{name}>[^/]+)"
            elif token == "**/":
                pattern += r"(?:[^/]+/)*"
            elif token == "**":
                pattern += ".*"
            elif token == "*":
                pattern += "[^/]*"
            elif token.startswith("{"):
                raise LayoutError(
                    f"path template {self.text!r}: unknown placeholder {token!r}; "
                    "use {date}, {vehicle} or {drive}"
                )
            else:
                pattern += re.escape(token)
            pos = m.end()
        if pos != len(self.text):
            raise LayoutError(f"path template {self.text!r} cannot be parsed at {self.text[pos:]!r}")
        return re.compile(pattern + "$"), date_format

    @property
    def has_date(self) -> bool:
        return "{date" in self.text

    @property
    def has_vehicle(self) -> bool:
        return "{vehicle}" in self.text

    def match(self, relative: str) -> dict[str, str] | None:
        """The placeholders of a relative path (``/``-separated), or ``None`` if it does not match."""
        pattern, date_format = self._compiled
        m = pattern.match(relative)
        if not m:
            return None
        keys = {k: v for k, v in m.groupdict().items() if v is not None}
        if "date" in keys:
            try:
                keys["date"] = datetime.strptime(keys["date"], date_format).date().isoformat()
            except ValueError:
                return None
        return keys

    def discover(self, root: str | Path, days: set[date], vehicles: set[str] | None) -> list[Placed]:
        """Recordings under ``root`` that fall on ``days`` (and ``vehicles``), sorted by path."""
        self._compiled  # noqa: B018 -- a bad template fails before any listing
        root = Path(root)
        out: list[Placed] = []
        for dirpath, dirnames, filenames in self._walk(root, days):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
            for name in sorted(filenames):
                if not name.endswith(".mcap") or name.startswith("."):
                    continue
                path = os.path.join(dirpath, name)
                keys = self.match(os.path.relpath(path, root).replace(os.sep, "/"))
                if keys is None:
                    continue
                if "date" in keys and date.fromisoformat(keys["date"]) not in days:
                    continue
                if "vehicle" in keys and vehicles is not None and keys["vehicle"] not in vehicles:
                    continue
                placed = self._place(path, keys)
                if date.fromisoformat(placed.day) in days and (
                    vehicles is None or placed.vehicle in vehicles
                ):
                    out.append(placed)
        return sorted(out, key=lambda p: p.path)

    def _walk(self, root: Path, days: set[date]) -> list[tuple[str, list[str], list[str]]]:
        """``os.walk`` of the folders that can hold the days' files (only those days' folders
        when the first path component is made of the date alone, as in ``date={date}``)."""
        first = self.text.split("/", 1)[0]
        _, date_format = self._compiled
        if "/" in self.text and re.fullmatch(r"[^{}*]*\{date(:[^}]*)?\}[^{}*]*", first):
            tops = sorted({re.sub(r"\{date(:[^}]*)?\}", d.strftime(date_format), first) for d in days})
            return [w for top in tops if (root / top).is_dir() for w in os.walk(root / top)]
        return list(os.walk(root))

    def _place(self, path: str, keys: dict[str, str]) -> Placed:
        day, vehicle = keys.get("date"), keys.get("vehicle")
        if day is None or vehicle is None:
            start, meta_vehicle = file_facts(path)
            if day is None:
                if start is None:
                    raise LayoutError(
                        f"{path}: no {{date}} in the path template and no messages to date it by"
                    )
                day = datetime.fromtimestamp(start / 1e9, UTC).date().isoformat()
            if vehicle is None:
                if meta_vehicle is None:
                    raise LayoutError(
                        f"{path}: no {{vehicle}} in the path template and no metadata record with "
                        f"{' or '.join(VEHICLE_KEYS)}; add {{vehicle}} to the template"
                    )
                vehicle = meta_vehicle
        drive = keys.get("drive") or Path(path).stem
        return Placed(path, day, vehicle, drive)


def file_facts(path: str) -> tuple[int | None, str | None]:
    """(start time in ns, vehicle id from metadata) of a recording, from its summary when it has one."""
    from mcap.reader import make_reader

    start: int | None = None
    vehicle: str | None = None
    with open(path, "rb") as fh:
        reader = make_reader(fh)
        try:
            summary = reader.get_summary()
            stats = summary.statistics if summary is not None else None
            if stats is not None and stats.message_count:
                start = stats.message_start_time
            for record in reader.iter_metadata():
                for key in VEHICLE_KEYS:
                    if record.metadata.get(key):
                        vehicle = record.metadata[key]
                        break
                if vehicle is not None:
                    break
            if start is None:
                for _, _, message in reader.iter_messages():
                    start = message.log_time
                    break
        except Exception as err:  # a damaged file is placed by its path or reported by the job
            raise LayoutError(f"{path}: cannot read its start time or metadata: {err}") from err
    return start, vehicle
