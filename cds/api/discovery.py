"""Discovery (`GET /cds-services`): the three services, their prefetch templates and usage."""

from __future__ import annotations

from collections.abc import Mapping

from cds.api import prefetch as prefetch_mod
from cds.api.errors import (
    ApiError,
)
from cds.api.models import (
    Discovery,
    Service,
)
from cds.contracts.cards import EXTENSION_KEY
from cds.fhir.profiles import load_profiles
from cds.settings import Settings

SERVICE_DEFS: dict[str, tuple[str, str, str]] = {
    "bmd-patient-view": (
        "patient-view",
        "Bone density (DXA) interpretation",
        "Reads the patient's DXA results (lumbar spine, hip, femoral neck T- and Z-scores, BMD, "
        "TBS), bone-active medications, conditions and procedures, and answers with cards: "
        "densitometric category, artifacts that bias lumbar BMD, change since the last scan, "
        "TBS, workup, rescan interval and therapy safety.",
    ),
    "bmd-order-select": (
        "order-select",
        "DXA order timing (order selected)",
        "When a DXA is selected, checks its timing against the last axial DXA (repeat-scan "
        "interval and coverage), names the exceptions and suggests the previous scanner. "
        "Other bone density cards are left to patient-view, except a critical safety card.",
    ),
    "bmd-order-sign": (
        "order-sign",
        "DXA order timing (order signed)",
        "Before draft orders are signed: the same checks as bmd-order-select on every draft "
        "order in context.draftOrders.",
    ),
}

USAGE = (
    "Send every prefetch key (null when there is no data), or an allowlisted fhirServer "
    "with fhirAuthorization so the service can fetch what is missing; otherwise the answer "
    "is 412. Feedback: POST /cds-services/{id}/feedback. Cards carry a machine-readable "
    f"payload at extension['{EXTENSION_KEY}']."
)

BASE_URL_REQUIRED = (
    "OSTEOHOOKS_AUTH=jwt needs OSTEOHOOKS_BASE_URL, the public URL the EHR calls (e.g. "
    "https://cds.example.org): a JWT's aud is checked against it, never against the Host or "
    "X-Forwarded-Proto of the request, which a caller can choose"
)

NO_AUTH_WARNING = (
    "WARNING: AUTHENTICATION IS OFF (OSTEOHOOKS_AUTH=none): development only, never expose "
    "this service to patient data. "
)


def observation_codes(settings: Settings) -> list[str]:
    """The Observation codes the facts stage reads, from fhir_profiles/ (else CS-1.7)."""
    codes = list(load_profiles(settings.fhir_profiles).observation_codes)
    return codes or list(prefetch_mod.CS_1_7_OBSERVATION_CODES)


def build_discovery(settings: Settings, templates: Mapping[str, str]) -> Discovery:
    warning = NO_AUTH_WARNING if settings.auth == "none" else ""
    return Discovery(
        services=[
            Service(
                hook=hook,
                title=title,
                description=warning + description,
                id=service_id,
                prefetch=dict(templates),
                usageRequirements=warning + USAGE,
            )
            for service_id, (hook, title, description) in SERVICE_DEFS.items()
        ]
    )


def service_of(service_id: str) -> tuple[str, str, str]:
    try:
        return SERVICE_DEFS[service_id]
    except KeyError:
        raise ApiError(
            404,
            f"No CDS service {service_id!r}. Services: {', '.join(SERVICE_DEFS)} "
            "(GET /cds-services lists them).",
            expression=["id"],
        ) from None
