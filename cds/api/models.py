"""Pydantic models of every CDS Hooks 2.0.1 body this service reads or writes.

Serialise with `dump()`: absent optional fields are omitted (the spec forbids null, "",
[] and {} for optional elements). Request models accept unknown keys (the spec lets hooks
and clients add fields and `extension`); response models are what we promise.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from cds.contracts.cards import (
    Action,
    Card,
    Coding,
)

FHIR_ID = r"[A-Za-z0-9\-\.]{1,64}"
_REFERENCE = re.compile(rf"^([A-Z][A-Za-z]+)/({FHIR_ID})$")

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
FhirId = Annotated[
    str,
    StringConstraints(pattern=rf"^{FHIR_ID}$"),
    Field(description="a FHIR logical id ([A-Za-z0-9-.]{1,64})"),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


# --------------------------------------------------------------------------- shared types


def _reference(types: tuple[str, ...]) -> Any:
    def check(value: str) -> str:
        match = _REFERENCE.match(value)
        if not match:
            raise ValueError(
                f"must be '<ResourceType>/<id>' (e.g. 'Practitioner/123'), got {value!r}"
            )
        if match.group(1) not in types:
            raise ValueError(f"resource type must be one of {', '.join(types)}")
        return value

    return AfterValidator(check)


# --------------------------------------------------------------------------- request


class FhirAuthorization(_Model):
    """The OAuth 2.0 bearer token the CDS Client lends us for its FHIR server."""

    access_token: NonEmpty = Field(repr=False)
    token_type: NonEmpty = Field(description="fixed value: Bearer")
    expires_in: int = Field(ge=0)
    scope: NonEmpty
    subject: NonEmpty
    patient: FhirId | None = None

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, value: str) -> str:
        if value.lower() != "bearer":
            raise ValueError("token_type must be 'Bearer'")
        return "Bearer"

    def patient_scope_without_patient(self) -> bool:
        """cds-r-2 (warning): patient/ scopes SHOULD name the patient."""
        return "patient/" in self.scope and self.patient is None


def _is_uuid(value: str) -> str:
    try:
        UUID(value)
    except ValueError:
        raise ValueError(
            "hookInstance must be a UUID, e.g. 'd1577c69-dfbe-44ad-ba6d-3e05e953b2ea'"
        ) from None
    return value


def _is_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+[^\s]*$", value):
        raise ValueError(f"fhirServer must be an absolute http(s) URL, got {value!r}")
    return value


class CdsRequest(_Model):
    """The body POSTed to `/cds-services/{id}` (context is validated per hook afterwards)."""

    hook: NonEmpty
    hookInstance: Annotated[str, AfterValidator(_is_uuid)]
    fhirServer: Annotated[str, AfterValidator(_is_url)] | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _cds_r_1(self) -> CdsRequest:
        if self.fhirAuthorization is not None and self.fhirServer is None:
            raise ValueError(
                "cds-r-1: fhirAuthorization is given, so fhirServer is required "
                "(the base URL of the FHIR server the token is for)"
            )
        return self


class PatientViewContext(_Model):
    userId: Annotated[
        str, _reference(("Practitioner", "PractitionerRole", "Patient", "RelatedPerson"))
    ]
    patientId: FhirId
    encounterId: FhirId | None = None


class DraftOrdersBundle(_Model):
    """A Bundle of draft request resources (context.draftOrders)."""

    resourceType: Literal["Bundle"]
    entry: list[dict[str, Any]] | None = None

    @field_validator("entry")
    @classmethod
    def _entries(cls, entries: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for index, entry in enumerate(entries or []):
            resource = entry.get("resource")
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                raise ValueError(f"entry[{index}].resource must be a FHIR resource object")
        seen: dict[str, int] = {}
        for index, entry in enumerate(entries or []):
            resource = entry["resource"]
            if isinstance(resource.get("id"), str):
                ref = f"{resource['resourceType']}/{resource['id']}"
                if ref in seen:
                    raise ValueError(
                        f"entry[{index}] is {ref} again (also entry[{seen[ref]}]): each draft "
                        "order must appear once; send each order a single time"
                    )
                seen[ref] = index
        return entries

    def resources(self) -> list[dict[str, Any]]:
        return [entry["resource"] for entry in self.entry or []]

    def references(self) -> set[str]:
        return {
            f"{r['resourceType']}/{r['id']}"
            for r in self.resources()
            if isinstance(r.get("id"), str)
        }


_ORDER_USER = _reference(("Practitioner", "PractitionerRole"))


class OrderSignContext(_Model):
    userId: Annotated[str, _ORDER_USER]
    patientId: FhirId
    encounterId: FhirId | None = None
    draftOrders: DraftOrdersBundle


class OrderSelectContext(OrderSignContext):
    selections: list[NonEmpty] = Field(min_length=1)

    @model_validator(mode="after")
    def _selected_are_drafts(self) -> OrderSelectContext:
        known = self.draftOrders.references()
        for index, ref in enumerate(self.selections):
            if ref not in known:
                raise ValueError(
                    f"selections[{index}] {ref!r} names no entry of draftOrders "
                    f"(it holds: {', '.join(sorted(known)) or 'nothing'}); each selection "
                    "must be '<ResourceType>/<id>' of a draftOrders resource"
                )
        return self


CONTEXT_MODELS: dict[str, type[PatientViewContext | OrderSignContext]] = {
    "patient-view": PatientViewContext,
    "order-select": OrderSelectContext,
    "order-sign": OrderSignContext,
}


# --------------------------------------------------------------------------- discovery


class Service(_Strict):
    hook: NonEmpty
    title: NonEmpty | None = None
    description: NonEmpty
    id: NonEmpty
    prefetch: dict[str, NonEmpty] | None = None
    usageRequirements: NonEmpty | None = None


class Discovery(_Strict):
    services: list[Service]


# --------------------------------------------------------------------------- response


class CdsResponse(_Model):
    cards: list[Card]
    systemActions: list[Action] | None = Field(None, min_length=1)
    extension: dict[str, Any] | None = None


# --------------------------------------------------------------------------- feedback


class AcceptedSuggestion(_Model):
    id: NonEmpty


class OverrideReason(_Model):
    reason: Coding | None = None
    userComment: NonEmpty | None = None

    @model_validator(mode="after")
    def _cds_fb_3(self) -> OverrideReason:
        if self.reason is None and self.userComment is None:
            raise ValueError("cds-fb-3: overrideReason needs a reason, a userComment, or both")
        return self


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(
            "outcomeTimestamp must carry a time zone (RFC 3339, UTC), e.g. 2021-12-11T10:05:31Z"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 or 9999-12-31T23:59-12:00
        raise ValueError(
            "outcomeTimestamp lies outside the years 1-9999 once converted to UTC; send the "
            "time the card was acted on, e.g. 2021-12-11T10:05:31Z"
        ) from None


class Feedback(_Model):
    card: NonEmpty
    outcome: Literal["accepted", "overridden"]  # cds-fb-1
    acceptedSuggestions: list[AcceptedSuggestion] | None = Field(None, min_length=1)
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: Annotated[datetime, AfterValidator(_utc)]

    @model_validator(mode="after")
    def _cds_fb_2(self) -> Feedback:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError(
                "cds-fb-2: outcome 'accepted' needs acceptedSuggestions "
                "([{'id': '<suggestion uuid>'}])"
            )
        return self


class FeedbackRequest(_Model):
    feedback: list[Feedback] = Field(min_length=1)


class FeedbackReceipt(_Strict):
    """Answer to a feedback POST: how many items were new and how many were repeats."""

    stored: int
    duplicates: int
