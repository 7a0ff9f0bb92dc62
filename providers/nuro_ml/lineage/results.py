"""What a finished operator produced, as the lineage builders read it.

The OpenLineage listener runs ``get_openlineage_facets_on_complete`` in a process forked from the
task (unless ``[openlineage] execute_in_thread``), where talking to the supervisor, so reading
XCom, is not possible: operators keep their return value as ``_lineage_result`` (in ``execute``,
or in the method that finishes after a deferral) and the builders read it from there.
"""

from __future__ import annotations

from typing import Any


def kept_result(operator: Any) -> Any:
    """The value the operator returned in this process (``None`` if it kept none)."""
    return getattr(operator, "_lineage_result", None)
