"""Extra link from a RayJobOperator task to its job page on the Ray dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: XCom key of the job page URL. The operator pushes it right after submitting (so the button
#: works while the job runs); it is also the link's own key, which the UI reads.
RAY_JOB_URL_XCOM_KEY = "ray_job_url"
#: XCom key of the Ray submission id.
RAY_SUBMISSION_ID_XCOM_KEY = "ray_submission_id"


class RayJobLink(BaseOperatorLink):
    """ "Ray Job" button: the job's page on the Ray dashboard."""

    name = "Ray Job"

    @property
    def xcom_key(self) -> str:
        return RAY_JOB_URL_XCOM_KEY

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(ti_key=ti_key, key=RAY_JOB_URL_XCOM_KEY)
        return str(url) if url else ""
