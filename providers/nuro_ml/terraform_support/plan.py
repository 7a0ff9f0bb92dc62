"""Change summaries of saved Terraform plans (``terraform show -json <planfile>``).

Only addresses and actions leave this module: ``show -json`` also carries variable values and planned
attribute values, which may be secret, so the raw document never goes to logs or XCom.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nuro_ml.exceptions import TerraformError


class ChangeAction(StrEnum):
    """What a plan does to one resource (Terraform's action lists folded into one value)."""

    NO_OP = "no-op"
    CREATE = "create"
    READ = "read"
    UPDATE = "update"
    DELETE = "delete"
    REPLACE = "replace"

    @classmethod
    def from_actions(cls, actions: Sequence[str]) -> ChangeAction:
        """Fold ``change.actions`` (e.g. ``["delete", "create"]``) into one action."""
        key = tuple(actions)
        if key in (("delete", "create"), ("create", "delete")):
            return cls.REPLACE
        if len(key) == 1:
            try:
                return cls(key[0])
            except ValueError:
                pass
        raise TerraformError(f"unrecognised Terraform change actions {list(actions)!r} in plan JSON")

    @property
    def is_change(self) -> bool:
        """Whether applying would modify infrastructure (``read`` and ``no-op`` do not)."""
        return self not in (ChangeAction.NO_OP, ChangeAction.READ)

    @property
    def destroys(self) -> bool:
        """Whether an existing object is destroyed (``delete`` or ``replace``)."""
        return self in (ChangeAction.DELETE, ChangeAction.REPLACE)


#: Names accepted in ``require_approval_for`` and what they mean.
ACTION_ALIASES: dict[str, ChangeAction] = {
    "create": ChangeAction.CREATE,
    "add": ChangeAction.CREATE,
    "update": ChangeAction.UPDATE,
    "change": ChangeAction.UPDATE,
    "delete": ChangeAction.DELETE,
    "destroy": ChangeAction.DELETE,
    "replace": ChangeAction.REPLACE,
}


@dataclass(frozen=True)
class ResourceChange:
    """One resource instance's planned change."""

    address: str
    action: ChangeAction
    resource_type: str = ""
    module_address: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.action, ChangeAction):
            object.__setattr__(self, "action", ChangeAction(self.action))


@dataclass(frozen=True)
class PlanSummary:
    """Per-address change summary of a plan, safe to log and to push to XCom."""

    resource_changes: tuple[ResourceChange, ...] = ()
    output_changes: Mapping[str, ChangeAction] = field(default_factory=dict)
    drift: tuple[ResourceChange, ...] = ()

    def addresses(self, action: ChangeAction) -> list[str]:
        return [rc.address for rc in self.resource_changes if rc.action is action]

    @property
    def add(self) -> list[str]:
        return self.addresses(ChangeAction.CREATE)

    @property
    def change(self) -> list[str]:
        return self.addresses(ChangeAction.UPDATE)

    @property
    def replace(self) -> list[str]:
        return self.addresses(ChangeAction.REPLACE)

    @property
    def destroy(self) -> list[str]:
        return self.addresses(ChangeAction.DELETE)

    @property
    def actions(self) -> set[ChangeAction]:
        return {rc.action for rc in self.resource_changes if rc.action.is_change}

    @property
    def has_resource_changes(self) -> bool:
        return bool(self.actions)

    @property
    def has_changes(self) -> bool:
        """Whether applying would change anything, resources or root outputs."""
        return self.has_resource_changes or any(a.is_change for a in self.output_changes.values())

    def describe(self) -> str:
        """One line like ``1 to add, 0 to change, 1 to replace, 0 to destroy``."""
        return (
            f"{len(self.add)} to add, {len(self.change)} to change, "
            f"{len(self.replace)} to replace, {len(self.destroy)} to destroy"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form pushed to XCom (addresses and actions only)."""
        return {
            "add": self.add,
            "change": self.change,
            "replace": self.replace,
            "destroy": self.destroy,
            "read": self.addresses(ChangeAction.READ),
            "outputs": {name: action.value for name, action in sorted(self.output_changes.items())},
            "drift": [rc.address for rc in self.drift],
            "has_changes": self.has_changes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanSummary:
        """Inverse of :meth:`to_dict` (used by tasks reading a plan summary from XCom)."""
        changes: list[ResourceChange] = []
        for key, action in (
            ("add", ChangeAction.CREATE),
            ("change", ChangeAction.UPDATE),
            ("replace", ChangeAction.REPLACE),
            ("destroy", ChangeAction.DELETE),
            ("read", ChangeAction.READ),
        ):
            changes.extend(ResourceChange(address=str(addr), action=action) for addr in data.get(key) or ())
        return cls(
            resource_changes=tuple(changes),
            output_changes={str(k): ChangeAction(v) for k, v in (data.get("outputs") or {}).items()},
            drift=tuple(ResourceChange(str(a), ChangeAction.UPDATE) for a in data.get("drift") or ()),
        )

    @classmethod
    def from_show_json(cls, document: Mapping[str, Any]) -> PlanSummary:
        """Build from ``terraform show -json <planfile>``."""
        if "format_version" not in document:
            raise TerraformError("`terraform show -json` output has no format_version; is it a plan file?")
        return cls(
            resource_changes=tuple(_resource_changes(document.get("resource_changes") or ())),
            output_changes={
                str(name): ChangeAction.from_actions((change or {}).get("actions") or ["no-op"])
                for name, change in (document.get("output_changes") or {}).items()
            },
            drift=tuple(_resource_changes(document.get("resource_drift") or ())),
        )

    def markdown(self, *, title: str = "Terraform plan") -> str:
        """A short Markdown report (used as the body of an approval request)."""
        lines = [f"**{title}:** {self.describe()}", ""]
        for label, addresses in (
            ("Destroy", self.destroy),
            ("Replace (destroy, then create)", self.replace),
            ("Update in place", self.change),
            ("Create", self.add),
        ):
            if addresses:
                lines.append(f"*{label}:*")
                lines.extend(f"- `{address}`" for address in addresses)
                lines.append("")
        if not self.has_changes:
            lines.append("No changes.")
        return "\n".join(lines).rstrip() + "\n"


def _resource_changes(raw: Iterable[Mapping[str, Any]]) -> list[ResourceChange]:
    changes = []
    for item in raw:
        actions = (item.get("change") or {}).get("actions") or ["no-op"]
        changes.append(
            ResourceChange(
                address=str(item["address"]),
                action=ChangeAction.from_actions(actions),
                resource_type=str(item.get("type", "")),
                module_address=item.get("module_address"),
            )
        )
    return changes


def normalise_actions(actions: Iterable[str]) -> frozenset[ChangeAction]:
    """Map user-facing names (``delete``, ``destroy``, ``replace``...) to actions, rejecting typos."""
    result = set()
    for name in actions:
        try:
            result.add(ACTION_ALIASES[str(name).lower()])
        except KeyError:
            raise TerraformError(
                f"unknown Terraform change action {name!r}; expected one of {sorted(ACTION_ALIASES)}"
            ) from None
    return frozenset(result)
