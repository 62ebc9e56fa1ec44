"""Request bodies: JSON object parsing and model validation, as 400 OperationOutcomes that
name the element (big bodies off the event loop)."""

from __future__ import annotations

import json
from typing import Any

import anyio
from pydantic import BaseModel, ValidationError

from cds.api.errors import (
    ApiError,
    validation_issues,
)
from cds.jsontext import loads, lone_surrogate


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = loads(body)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"The body is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
            f"Send a {what} as application/json.",
        ) from None
    except UnicodeDecodeError:
        raise ApiError(400, f"The body is not UTF-8 text. Send a {what} as JSON.") from None
    except RecursionError:
        raise ApiError(400, "The body nests JSON too deeply to read.") from None
    except ValueError as exc:  # Python's limit on integer digits (4300)
        raise ApiError(
            400,
            f"The body holds a number too long to read ({exc}). Send numbers of at most "
            "4300 digits (FHIR decimals and integers are far shorter).",
        ) from None
    where = lone_surrogate(body, data)
    if where is not None:
        raise ApiError(
            400,
            f"The body holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF without its "
            f"pair) at {where}: that is not Unicode text. Send valid UTF-8 strings.",
            expression=[where],
        )
    if not isinstance(data, dict):
        raise ApiError(
            400, f"The body must be a JSON object (a {what}), not {type(data).__name__}."
        )
    return data


#: Bodies above this many bytes are parsed and validated in a worker thread: a small body
#: costs less than the thread hop, a 5 MB one would hold the event loop for tens of ms.
PARSE_IN_THREAD_BYTES = 64 * 1024


async def parsed(
    limiter: anyio.CapacityLimiter | None, model: type[BaseModel], body: bytes, what: str
) -> Any:
    def parse() -> Any:
        return validated(model, _json_object(body, what))

    if len(body) <= PARSE_IN_THREAD_BYTES:
        return parse()
    return await anyio.to_thread.run_sync(parse, limiter=limiter)


def validated(model: type[BaseModel], data: Any, prefix: str = "") -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues = validation_issues(exc, prefix)
        raise ApiError(400, issues[0].diagnostics or "", issues=issues) from None
    except RecursionError:
        raise ApiError(400, "The body nests JSON too deeply to read.") from None
