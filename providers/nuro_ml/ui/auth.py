"""Who is calling: the Airflow user behind the request's JWT, and whether they administer quotas.

The capacity app is mounted inside Airflow's API server, next to the UI, so it accepts the
same credentials Airflow does: ``Authorization: Bearer <JWT>`` (API clients) or the
``_token`` cookie the UI sets at login (the page, shown in the UI's frame). Tokens are
checked by Airflow's auth manager (signature, expiry, revocation), so whatever user store
Airflow uses, this app agrees with it.

Reading requires any logged-in user. Changing quotas requires the Admin role: the role
name for Airflow's simple and FAB auth managers; other auth managers are asked whether the
user may ``PUT`` the "GPU quotas" custom view.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status

log = logging.getLogger(__name__)

#: Cookie the Airflow UI stores the user's JWT in (``airflow.api_fastapi.auth.managers.base_auth_manager``).
COOKIE_NAME = "_token"
#: Resource name other auth managers are asked about for quota changes.
QUOTA_RESOURCE = "GPU quotas"
ADMIN_ROLE = "admin"


def _unauthenticated(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def request_token(request: Request) -> str | None:
    """The JWT a request carries: an explicit bearer header wins over the UI's cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(COOKIE_NAME) or None


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


async def current_user(request: Request) -> Any:
    """FastAPI dependency: the Airflow user of the request, or 401."""
    token = request_token(request)
    if token is None:
        raise _unauthenticated("Not authenticated: log in to Airflow or send a bearer token")
    try:
        return await _auth_manager().get_user_from_token(token)
    except Exception as err:
        # Expired, badly signed, revoked or malformed: all mean "not logged in".
        log.info("Rejected token for %s: %s", request.url.path, type(err).__name__)
        raise _unauthenticated("Invalid or expired token: log in again") from err


User = Annotated[Any, Depends(current_user)]


def is_admin(user: Any) -> bool:
    """Whether the user has the Admin role (or, for other auth managers, may change quotas)."""
    role = getattr(user, "role", None)
    if isinstance(role, str):
        return role.lower() == ADMIN_ROLE
    roles = getattr(user, "roles", None)
    if roles is not None:
        return any(str(getattr(r, "name", r)).lower() == ADMIN_ROLE for r in roles)
    try:
        return bool(
            _auth_manager().is_authorized_custom_view(method="PUT", resource_name=QUOTA_RESOURCE, user=user)
        )
    except Exception:
        log.exception("Auth manager could not authorize %s", QUOTA_RESOURCE)
        return False


async def admin_user(user: User) -> Any:
    """FastAPI dependency: the request's user if they may change quotas, else 403."""
    if not is_admin(user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Changing GPU quotas requires the Admin role")
    return user


Admin = Annotated[Any, Depends(admin_user)]


def login_url(next_path: str) -> str:
    """Airflow's login page, returning to ``next_path`` afterwards."""
    try:
        return str(_auth_manager().get_url_login(next_url=next_path))
    except Exception:
        return f"/auth/login?next={next_path}"
