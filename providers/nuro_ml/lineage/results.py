"""The value a finished task returned, as the lineage builders read it."""

from __future__ import annotations

from typing import Any


def return_value(task_instance: Any) -> Any:
    """The task's XCom return value (``None`` if it pushed none)."""
    map_index = getattr(task_instance, "map_index", -1)
    kwargs: dict[str, Any] = {"task_ids": task_instance.task_id, "key": "return_value"}
    if map_index is not None and map_index >= 0:
        kwargs["map_indexes"] = map_index
    return task_instance.xcom_pull(**kwargs)
