"""`POST /cds-services/{id}/feedback`: stored once committed, 503 when the store cannot."""

from __future__ import annotations

import json
import logging

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from cds import metrics
from cds.api.body import parsed
from cds.api.discovery import service_of
from cds.api.guard import store_unavailable
from cds.api.models import (
    FeedbackReceipt,
    FeedbackRequest,
)
from cds.api.state import JSON, ServiceState
from cds.store import FeedbackItem, StoreUnavailable

log = logging.getLogger("osteohooks.api")
FEEDBACK_SECONDS = 2.0  # feedback not committed by then: 503 with Retry-After


async def answer_feedback(state: ServiceState, service_id: str, body: bytes) -> Response:
    service_of(service_id)
    request: FeedbackRequest = await parsed(
        state.eval_limiter, FeedbackRequest, body, "feedback object"
    )
    items = [
        FeedbackItem(
            card=f.card,
            outcome=f.outcome,
            outcome_timestamp=f.outcomeTimestamp,
            accepted_suggestions=[s.id for s in f.acceptedSuggestions or []],
            override_system=f.overrideReason.reason.system
            if f.overrideReason and f.overrideReason.reason
            else None,
            override_code=f.overrideReason.reason.code
            if f.overrideReason and f.overrideReason.reason
            else None,
            override_display=f.overrideReason.reason.display
            if f.overrideReason and f.overrideReason.reason
            else None,
            user_comment=f.overrideReason.userComment if f.overrideReason else None,
        )
        for f in request.feedback
    ]
    try:
        # acknowledged only once committed; a store that cannot commit within
        # FEEDBACK_SECONDS is a fast 503 (a late commit is harmless: feedback is idempotent)
        with anyio.fail_after(FEEDBACK_SECONDS):
            stored, duplicates = await anyio.to_thread.run_sync(
                state.store.store_feedback, service_id, items, abandon_on_cancel=True
            )
    except (TimeoutError, StoreUnavailable, SQLAlchemyError, OSError) as exc:
        metrics.STORE_FAILURES.labels(operation="feedback").inc()
        log.error(
            "feedback not stored (answered 503): %s",
            type(exc).__name__ if isinstance(exc, TimeoutError) else _first_line(exc),
            extra={"event": "feedback-unavailable", "service": service_id, "cards": len(items)},
        )
        raise store_unavailable() from None
    log.info(
        "feedback stored",
        extra={"event": "feedback", "service": service_id, "cards": len(items)},
    )
    receipt = FeedbackReceipt(stored=stored, duplicates=duplicates)
    return Response(json.dumps(receipt.dump()).encode(), media_type=JSON)


def _first_line(exc: BaseException) -> str:
    """The exception's class and first line, never the SQL parameters (user comments)."""
    if isinstance(exc, SQLAlchemyError):
        return f"{type(exc).__name__}: {getattr(exc, 'orig', None) or 'database error'}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
