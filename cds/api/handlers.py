"""Exception handlers: every error answer is an OperationOutcome (`cds.api.errors`)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cds.api.errors import (
    ApiError,
    error_response,
    issue,
    outcome_response,
)

log = logging.getLogger("osteohooks.api")


def add_error_handlers(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            text = (
                f"No such endpoint {request.method} {request.url.path}. CDS Hooks endpoints: "
                "GET /cds-services, POST /cds-services/{id}, POST /cds-services/{id}/feedback."
            )
        elif exc.status_code == 405:
            text = f"{request.method} is not allowed on {request.url.path}."
        else:
            text = str(exc.detail)
        return error_response(exc.status_code, text)

    async def invalid(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        issues = [
            issue(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}", code="structure")
            for e in exc.errors()
        ]
        return outcome_response(400, issues or [issue("Invalid request", code="structure")])

    async def crash(request: Request, exc: Exception) -> Response:
        log.error(
            "unhandled error on %s %s",
            request.method,
            request.url.path,
            exc_info=exc,
            extra={"event": "internal-error"},
        )
        return error_response(500, "Internal error; the service log has the details.")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, crash)
