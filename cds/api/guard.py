"""`RequestGuard`, pure ASGI: the body size limit (413) and JWT authentication (401) of every
`/cds-services` call, before any route runs; 503 when the jti store cannot be written."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cds import metrics
from cds.api.auth import AuthError, bearer_token
from cds.api.errors import (
    ApiError,
    error_response,
    unauthorized,
)
from cds.api.state import ServiceState
from cds.store import StoreUnavailable

log = logging.getLogger("osteohooks.api")
RETRY_AFTER_SECONDS = "5"


class RequestGuard:
    """Pure ASGI: body size limit and JWT authentication before any route runs."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state
        self.limit = state.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "Content-Length is not a number")(scope, receive, send)
                return
            if int(declared) > self.limit:
                await self._too_large(scope, receive, send)
                return
        path: str = scope["path"]
        needs_auth = self.state.verifier is not None and path.startswith("/cds-services")
        if needs_auth:
            try:
                authenticated = await self._authenticated(scope, headers, path)
            except StoreUnavailable as exc:  # the jti cannot be checked: not the caller's fault
                log.error("503: %s", exc, extra={"event": "store-unavailable", "path": path})
                await store_unavailable().response()(scope, receive, send)
                return
            if not authenticated:
                await unauthorized().response()(scope, receive, send)
                return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self._read(receive)
            if body is None:
                await self._too_large(scope, receive, send)
                return
            receive = _replay(body)
        await self.app(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        mb = self.limit / (1024 * 1024)
        await error_response(
            413,
            f"Request body larger than {mb:g} MB. Send only the prefetch keys advertised in "
            "discovery (the Observation search is restricted to the codes the rules read).",
        )(scope, receive, send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _authenticated(self, scope: Scope, headers: Mapping[str, str], path: str) -> bool:
        assert self.state.verifier is not None
        token = bearer_token(headers.get("authorization"))
        if token is None:
            log.debug("401: no bearer token", extra={"reason": "no-bearer", "path": path})
            metrics.AUTH_FAILURES.labels(reason="no-bearer").inc()
            return False
        base = self.state.settings.base_url
        assert base is not None  # create_app refuses JWT auth without OSTEOHOOKS_BASE_URL
        audiences = [base + path.rstrip("/")]
        parts = path.rstrip("/").split("/")
        if len(parts) == 4 and parts[3] == "feedback":  # aud may name the service itself
            audiences.append(base + "/".join(parts[:3]))
        try:
            claims = await self.state.verifier.verify(token, audiences)
        except AuthError as exc:
            log.debug("401: %s", exc, extra={"reason": str(exc), "path": path})
            metrics.AUTH_FAILURES.labels(reason=exc.reason).inc()
            return False
        except StoreUnavailable:
            raise
        except Exception:  # a verifier bug must not open the door
            log.exception("401: token verification crashed", extra={"path": path})
            metrics.AUTH_FAILURES.labels(reason="error").inc()
            return False
        scope.setdefault("state", {})["jwt_iss"] = claims.get("iss")
        return True


def store_unavailable() -> ApiError:
    return ApiError(
        503,
        "The service's store cannot take a write right now; nothing was recorded. Send the "
        f"same request again after {RETRY_AFTER_SECONDS} s (feedback is idempotent).",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
