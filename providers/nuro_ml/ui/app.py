"""The capacity app: a "GPU capacity" page and its JSON API, mounted in Airflow's API server.

Routes (relative to where the app is mounted, ``/nuro-ml`` by the plugin):

* ``GET /capacity`` - the page: pools, team quotas, active leases, the waiting queue,
  GPU-hours and cost, and a usage chart;
* ``GET /api/capacity?hours=24&buckets=24`` - the same data as JSON;
* ``GET /api/quotas``, ``GET /api/queue``, ``GET /api/me``;
* ``GET /api/stream`` - the telemetry stream's progress record (freshness, queries, watermarks);
* ``GET /stream`` - the stream page: freshness p95, rates, last committed batch and watermark
  (``GET /api/stream/overview``: the same data as JSON);
* ``PUT /api/quotas/{pool}/{team}``, ``DELETE /api/quotas/{pool}/{team}``,
  ``PUT /api/pools/{pool}`` - changes, for users with the Admin role.

Every route needs a logged-in Airflow user (401 otherwise); changes need Admin (403).
Bodies and parameters are validated by pydantic (422 with the field at fault).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from nuro_ml.capacity import view
from nuro_ml.capacity.policy import POLICIES
from nuro_ml.capacity.records import gpu_quantity
from nuro_ml.exceptions import CapacityError
from nuro_ml.metrics.endpoint import create_router as metrics_router
from nuro_ml.ui import auth, capacity_data, stream_data
from nuro_ml.ui.auth import Admin, User
from nuro_ml.ui.chart import usage_svg

if TYPE_CHECKING:
    from nuro_ml.etl.stream_progress import StreamProgress

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The stream page reloads itself this often (its figures change every micro-batch).
STREAM_PAGE_REFRESH_SECONDS = 10
TEAM_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
POOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"

Team = Annotated[str, PathParam(pattern=TEAM_PATTERN, description="Team name (lower case, digits, dashes).")]
PoolName = Annotated[str, PathParam(pattern=POOL_PATTERN, description="Pool name.")]
Hours = Annotated[
    float, Query(gt=0, le=24 * 90, description="Window of the usage chart and costs, in hours.")
]
Buckets = Annotated[int, Query(ge=1, le=288, description="Bars in the usage chart.")]
Policy = Annotated[
    str,
    Query(
        pattern="^(" + "|".join(re.escape(name) for name in POLICIES) + ")$",
        description="Admission policy whose order the queue shows.",
    ),
]

_templates = Environment(
    loader=PackageLoader("nuro_ml.ui", "templates"), autoescape=select_autoescape(["html"])
)


class QuotaBody(BaseModel):
    """A team's quota in a pool."""

    model_config = ConfigDict(extra="forbid")

    nominal: int | float = Field(
        ge=0,
        le=100_000,
        description='GPUs the team is entitled to: whole (4), fractional (2.5) or milli-GPUs ("2500m").',
    )
    borrowing_limit: int | float | None = Field(
        default=None,
        ge=0,
        le=100_000,
        description="Extra GPUs it may borrow from idle quota (null: no limit).",
    )
    lending_limit: int | float | None = Field(
        default=None, ge=0, le=100_000, description="Idle GPUs of its quota others may borrow (null: all)."
    )

    @field_validator("nominal", "borrowing_limit", "lending_limit", mode="before")
    @classmethod
    def _gpu_amount(cls, value: Any, info: ValidationInfo) -> Any:
        # The ledger counts milli-GPUs: 2.5 and "2500m" are the same quota, 2.0001 is none.
        if value is None:
            return None
        try:
            return gpu_quantity(value, what=str(info.field_name))
        except CapacityError as err:
            raise ValueError(str(err)) from None

    @model_validator(mode="after")
    def _lending_within_nominal(self) -> QuotaBody:
        if self.lending_limit is not None and self.lending_limit > self.nominal:
            raise ValueError(f"lending_limit ({self.lending_limit}) cannot exceed nominal ({self.nominal})")
        return self


class PoolBody(BaseModel):
    """A pool's capacity."""

    model_config = ConfigDict(extra="forbid")

    capacity: int = Field(ge=0, le=1_000_000, description="GPUs in the pool.")
    gpu_type: str | None = Field(default=None, max_length=64, description="GPU model, e.g. A100.")


class Me(BaseModel):
    name: str
    admin: bool


def _overview(hours: float, buckets: int, policy: str = "fair") -> view.CapacityOverview:
    try:
        return capacity_data.overview(hours=hours, buckets=buckets, policy=policy)
    except CapacityError as err:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"quota ledger unavailable: {err}"
        ) from err


def _progress() -> StreamProgress | None:
    """The stream's progress record, ``None`` before any stream ran; 503 when unreadable."""
    from nuro_ml.etl.stream_progress import StreamProgress

    try:
        return StreamProgress.read(stream_data.state_dir())
    except ValueError as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(err)) from err


def _progress_or_404() -> StreamProgress:
    progress = _progress()
    if progress is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no telemetry stream has run under {stream_data.state_dir()}"
        )
    return progress


def create_app() -> FastAPI:
    """Build the app (the plugin mounts it; tests drive it with TestClient)."""
    app = FastAPI(
        title="nuro-ml GPU capacity",
        description=__doc__,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(metrics_router())

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        # The page is opened by people, not API clients: offer them the login page.
        endpoint = getattr(request.scope.get("endpoint"), "__name__", "")
        if exc.status_code == status.HTTP_401_UNAUTHORIZED and endpoint in ("capacity_page", "stream_page"):
            login = auth.login_url(str(request.url.path))
            body = _templates.get_template("login_required.html").render(login_url=login, detail=exc.detail)
            return HTMLResponse(body, status_code=exc.status_code, headers=exc.headers)
        from fastapi.exception_handlers import http_exception_handler

        return await http_exception_handler(request, exc)

    @app.get("/capacity", response_class=HTMLResponse, summary="The GPU capacity page")
    def capacity_page(
        request: Request, user: User, hours: Hours = 24.0, buckets: Buckets = 24, policy: Policy = "fair"
    ) -> HTMLResponse:
        data = _overview(hours, buckets, policy)
        body = _templates.get_template("capacity.html").render(
            data=data,
            chart=usage_svg(data.usage),
            user_name=user.get_name(),
            admin=auth.is_admin(user),
            root=str(request.scope.get("root_path", "")).rstrip("/"),
        )
        return HTMLResponse(body)

    @app.get("/api/capacity", response_model=view.CapacityOverview, summary="Everything on the page")
    def capacity(
        user: User, hours: Hours = 24.0, buckets: Buckets = 24, policy: Policy = "fair"
    ) -> view.CapacityOverview:
        return _overview(hours, buckets, policy)

    @app.get("/api/quotas", response_model=list[view.QuotaView], summary="Team quotas and their usage")
    def quotas(user: User) -> list[view.QuotaView]:
        return _overview(24.0, 1).quotas

    @app.get("/api/queue", response_model=list[view.QueueEntry], summary="Requests waiting for GPUs")
    def queue(user: User, policy: Policy = "fair") -> list[view.QueueEntry]:
        return _overview(24.0, 1, policy).queue

    @app.get("/api/stream", summary="The telemetry stream's progress: freshness, queries, watermarks")
    def stream(user: User) -> dict[str, Any]:
        from dataclasses import asdict

        from nuro_ml.etl.stream_progress import pid_alive

        progress = _progress_or_404()
        return {**asdict(progress), "running": pid_alive(progress.pid)}

    @app.get(
        "/api/stream/overview",
        response_model=stream_data.StreamOverview,
        summary="Everything on the stream page",
    )
    def stream_overview(user: User) -> stream_data.StreamOverview:
        return stream_data.stream_overview(_progress_or_404(), where=stream_data.state_dir())

    @app.get("/stream", response_class=HTMLResponse, summary="The telemetry stream page")
    def stream_page(request: Request, user: User) -> HTMLResponse:
        from datetime import UTC, datetime

        progress = _progress()
        where = stream_data.state_dir()
        now = datetime.now(tz=UTC)
        data = stream_data.stream_overview(progress, where=where, now=now) if progress else None
        body = _templates.get_template("stream.html").render(
            data=data,
            generated_at=now,
            state_dir=str(where),
            user_name=user.get_name(),
            refresh_seconds=STREAM_PAGE_REFRESH_SECONDS,
            root=str(request.scope.get("root_path", "")).rstrip("/"),
        )
        return HTMLResponse(body)

    @app.get("/api/me", response_model=Me, summary="The caller and whether they may change quotas")
    def me(user: User) -> Me:
        return Me(name=user.get_name(), admin=auth.is_admin(user))

    @app.put("/api/quotas/{pool}/{team}", response_model=view.QuotaView, summary="Set a team's quota")
    def put_quota(pool: PoolName, team: Team, body: QuotaBody, user: Admin) -> view.QuotaView:
        if not capacity_data.pool_exists(pool):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"pool {pool!r} is not registered")
        capacity_data.set_quota(
            team,
            pool,
            nominal=body.nominal,
            borrowing_limit=body.borrowing_limit,
            lending_limit=body.lending_limit,
        )
        return next(q for q in _overview(24.0, 1).quotas if q.team == team and q.pool == pool)

    @app.delete("/api/quotas/{pool}/{team}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a quota")
    def delete_quota(pool: PoolName, team: Team, user: Admin) -> Response:
        if not capacity_data.remove_quota(team, pool):
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, detail=f"team {team!r} has no quota in pool {pool!r}"
            )
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @app.put("/api/pools/{pool}", response_model=view.PoolView, summary="Register a pool or resize it")
    def put_pool(pool: PoolName, body: PoolBody, user: Admin) -> view.PoolView:
        capacity_data.set_pool(pool, capacity=body.capacity, gpu_type=body.gpu_type)
        return next(p for p in _overview(24.0, 1).pools if p.name == pool)

    return app
