"""Which planned changes need a human decision before they are applied."""

from __future__ import annotations

from collections.abc import Iterable

from nuro_ml.terraform_support.plan import ChangeAction, PlanSummary, normalise_actions

#: Default gate: anything that destroys an existing object.
DEFAULT_APPROVAL_ACTIONS: tuple[str, ...] = ("delete", "replace")


def approval_actions(require_approval_for: Iterable[str] | bool | None) -> frozenset[ChangeAction]:
    """Normalise a pipeline's ``require_approval_for`` setting.

    ``False``/``None``/empty disables the gate, ``True`` means the default (delete and replace), and a
    collection names the actions (``create``, ``update``, ``delete``/``destroy``, ``replace``).
    """
    if require_approval_for is None or require_approval_for is False:
        return frozenset()
    if require_approval_for is True:
        return normalise_actions(DEFAULT_APPROVAL_ACTIONS)
    if isinstance(require_approval_for, str):
        return normalise_actions([require_approval_for])
    return normalise_actions(require_approval_for)


def changes_needing_approval(summary: PlanSummary, actions: frozenset[ChangeAction]) -> list[str]:
    """``"<action> <address>"`` for each planned change whose action is gated (empty: apply freely)."""
    return [
        f"{change.action.value} {change.address}"
        for change in summary.resource_changes
        if change.action in actions
    ]
