"""The API's one error mapping: domain errors (rtrec.errors) to HTTP codes, and FastAPI's and Starlette's own errors
(validation, unknown route, wrong method, body too large) into the same error schema (schemas.ErrorResponse)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from rtrec.domain.access import retry_after_header
from rtrec.errors import (
    DependencyError,
    ForbiddenError,
    InvalidInputError,
    ModelNotReadyError,
    NotFoundError,
    RtrecError,
    ThrottledError,
    UnauthorizedError,
    short_reason,
)

from .observability import logger
from .observability import request_id as current_request_id

ERROR_STATUS: dict[type[RtrecError], int] = {
    InvalidInputError: 422,
    NotFoundError: 404,
    ModelNotReadyError: 503,
    DependencyError: 503,
    UnauthorizedError: 401,
    ForbiddenError: 403,
    ThrottledError: 429,
}


def _status_for(exc: RtrecError) -> int:
    for error_type in type(exc).__mro__:
        if error_type in ERROR_STATUS:
            return ERROR_STATUS[error_type]
    return 500


def error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": short_reason(detail), "request_id": current_request_id()}


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RtrecError)
    status = _status_for(exc)
    if status >= 500 or not exc.public:
        logger.error("request failed", extra={"error": type(exc).__name__, "detail": str(exc)})
    detail = str(exc) if exc.public else exc.public_detail
    headers = {"Retry-After": retry_after_header(exc.retry_after_s)} if isinstance(exc, ThrottledError) else None
    return JSONResponse(status_code=status, content=error_body(exc.code, detail), headers=headers)


VALIDATION_DETAIL_CHARS = 240  # then "and N more"


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request validation errors in the one error schema: where and what, never the input itself
    (FastAPI's own body repeats it, which for an 11 MB body was an 11 MB answer)."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    parts: list[str] = []
    for n, error in enumerate(errors):
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        part = f"{short_reason(where, 60)}: {short_reason(error.get('msg', 'invalid'), 100)}"
        if parts and sum(len(p) + 2 for p in parts) + len(part) > VALIDATION_DETAIL_CHARS:
            parts.append(f"and {len(errors) - n} more")
            break
        parts.append(part)
    return JSONResponse(status_code=422, content=error_body("invalid_input", "; ".join(parts) or "invalid request"))


HTTP_ERROR_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _allowed_methods(request: Request) -> str | None:
    """Every method some route serves at this path: Starlette's 405 names only the first matching route's, and a
    path can have several routes (PATCH and DELETE /items/{id})."""
    methods: set[str] = set()
    # The routes themselves: an included router is one entry of `router.routes`, matched lazily.
    for route in iter_route_contexts(request.app.router.routes):
        match, _ = route.matches({**request.scope, "method": "\x00"})  # a method no route has: a path-only match
        if match is not Match.NONE and route.methods:
            methods |= route.methods
    return ", ".join(sorted(methods)) if methods else None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method, body over the limit, a body that is not JSON) in the
    one error schema; a 400 (a body that cannot be read as the route's input) is a 422, as every other bad input."""
    assert isinstance(exc, StarletteHTTPException)
    status = 422 if exc.status_code == 400 else exc.status_code
    code = HTTP_ERROR_CODES.get(status, "invalid_input" if status < 500 else "internal_error")
    headers = dict(exc.headers or {})
    if status == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = allowed
    return JSONResponse(status_code=status, content=error_body(code, str(exc.detail)), headers=headers or None)


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error")
    return JSONResponse(status_code=500, content=error_body("internal_error", "unexpected server error"))


def add_error_handlers(app: FastAPI) -> None:
    """Every error the app can raise answers in the one error schema."""
    app.add_exception_handler(RtrecError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
