"""ROS 2 standard message definitions, in the concatenated form rosbag2 stores in MCAP.

The ``.msg`` files under ``ros2_msgs/`` are copied unchanged from the public ROS 2 repositories
(Apache License 2.0): ``ros2/common_interfaces`` (sensor_msgs, nav_msgs, geometry_msgs, std_msgs;
commit c0c0bc57), ``ros2/geometry2`` (tf2_msgs; commit 1b005c65) and ``ros2/rcl_interfaces``
(builtin_interfaces; commit f6b3741d). rosbag2 writes a schema's own text, then each dependency
after a line of 80 ``=`` and ``MSG: pkg/Type``, which :func:`definition` reproduces.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

MSG_ROOT = Path(__file__).with_name("ros2_msgs")
_BUILTIN = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
    "int32", "uint32", "int64", "uint64", "string", "wstring",
}  # fmt: skip
_TYPE_RE = re.compile(r"^([A-Za-z0-9_/]+)")


def _split(name: str) -> tuple[str, str]:
    parts = name.split("/")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[1] != "msg"):
        raise KeyError(f"{name!r} is not a ROS 2 message name (pkg/msg/Type)")
    return parts[0], parts[-1]


def msg_text(name: str) -> str:
    """The ``.msg`` text of ``pkg/msg/Type`` (or ``pkg/Type``)."""
    pkg, typ = _split(name)
    path = MSG_ROOT / pkg / "msg" / f"{typ}.msg"
    if not path.is_file():
        raise KeyError(f"no bundled definition for {name}; available: {', '.join(available())}")
    return path.read_text(encoding="utf-8")


def _dependencies(text: str, package: str) -> list[str]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        m = _TYPE_RE.match(line)
        if not m:
            continue
        base = m.group(1)
        if base in _BUILTIN:
            continue
        if base == "Header":
            base = "std_msgs/Header"
        pkg, typ = (base.split("/")[0], base.split("/")[-1]) if "/" in base else (package, base)
        out.append(f"{pkg}/{typ}")
    return out


@cache
def definition(name: str) -> str:
    """The full ``ros2msg`` schema text of ``pkg/msg/Type`` with every dependency, as rosbag2 writes."""
    pkg, _ = _split(name)
    text = msg_text(name)
    parts = [text.rstrip("\n")]
    seen: set[str] = set()
    queue = _dependencies(text, pkg)
    while queue:
        dep = queue.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        dep_text = msg_text(dep)
        parts.append("=" * 80 + f"\nMSG: {dep}\n" + dep_text.rstrip("\n"))
        queue.extend(_dependencies(dep_text, dep.split("/")[0]))
    return "\n".join(parts) + "\n"


def available() -> list[str]:
    """Every bundled message name, ``pkg/msg/Type``."""
    return sorted(f"{p.parent.parent.name}/msg/{p.stem}" for p in MSG_ROOT.glob("*/msg/*.msg"))
