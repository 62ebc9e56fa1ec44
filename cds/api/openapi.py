"""The OpenAPI document: the request models and the OperationOutcome error answers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from cds.api.models import (
    CdsRequest,
    FeedbackRequest,
    OrderSelectContext,
    OrderSignContext,
    PatientViewContext,
)
from cds.api.state import JSON

ERROR_DOCS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/fhir+json": {}}}
    for code, text in {
        400: "Malformed JSON or request shape (OperationOutcome)",
        401: "Missing or invalid JWT (OperationOutcome)",
        404: "Unknown service (OperationOutcome)",
        412: "Required prefetch data neither sent nor fetchable (OperationOutcome)",
        413: "Body over 5 MB (OperationOutcome)",
        422: "FHIR data too unusable to evaluate (OperationOutcome)",
        500: "Internal failure (OperationOutcome)",
        503: "Store unavailable: nothing recorded, retry after Retry-After (OperationOutcome)",
    }.items()
}


def body_doc(model: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{model}"}}},
        }
    }


def add_openapi(app: FastAPI) -> None:
    def custom() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, defs = models_json_schema(
            [
                (m, "validation")
                for m in (
                    CdsRequest,
                    FeedbackRequest,
                    PatientViewContext,
                    OrderSelectContext,
                    OrderSignContext,
                )
            ],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        app.openapi_schema = schema
        return schema

    app.openapi = custom  # type: ignore[method-assign]
