"""Lineage of Terraform: the workspace whose state a plan reads and an apply or destroy changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nuro_ml.lineage import facets
from nuro_ml.lineage.naming import terraform_workspace_dataset
from nuro_ml.lineage.results import kept_result

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

#: Operation -> what it does to the workspace (None: it only reads it).
CHANGES = {"plan": None, "drift_check": None, "apply": "ALTER", "destroy": "DROP"}


def terraform_lineage(*, working_dir: str, workspace: str, operation: str, result: Any) -> OperatorLineage:
    from airflow.providers.openlineage.extractors import OperatorLineage

    if operation not in CHANGES:
        raise ValueError(f"unknown Terraform operation {operation!r} (known: {', '.join(CHANGES)})")
    dataset = terraform_workspace_dataset(working_dir, workspace)
    change = CHANGES[operation]
    if change is None:
        return OperatorLineage(inputs=[facets.input_dataset(dataset)])
    reported = result if isinstance(result, dict) else {}
    workspace_facet = (
        facets.TerraformWorkspaceDatasetFacet(destroyed=int(reported.get("count") or 0))
        if operation == "destroy"
        # Only the names: output values may be addresses or other details not meant for a catalog.
        else facets.TerraformWorkspaceDatasetFacet(outputs=sorted(str(k) for k in reported))
    )
    return OperatorLineage(
        outputs=[
            facets.output_dataset(
                dataset,
                {"lifecycleStateChange": facets.lifecycle(change), "nuro_ml_terraform": workspace_facet},
            )
        ]
    )


#: Operator class -> operation; subclasses of these classes count as them.
OPERATIONS = {
    "TerraformPlanOperator": "plan",
    "TerraformDriftCheckOperator": "drift_check",
    "TerraformApplyOperator": "apply",
    "TerraformDestroyOperator": "destroy",
}


def terraform_operator_lineage(operator: Any) -> OperatorLineage:
    """For the Terraform operators after success."""
    operation = next(
        (OPERATIONS[c.__name__] for c in type(operator).__mro__ if c.__name__ in OPERATIONS), None
    )
    if operation is None:
        raise ValueError(
            f"{type(operator).__name__} is not one of the Terraform operators {sorted(OPERATIONS)}"
        )
    return terraform_lineage(
        working_dir=str(operator.working_dir),
        workspace=str(operator.workspace or "default"),
        operation=operation,
        result=kept_result(operator),
    )
