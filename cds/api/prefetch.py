"""Prefetch: the templates advertised in discovery, and fetching what the client left out.

A key that is missing (or null, when a FHIR server is usable) is fetched from the request's
`fhirServer` with `fhirAuthorization.access_token`, but only when `fhirServer` starts with an
entry of `OSTEOHOOKS_FHIR_SERVER_ALLOWLIST`; otherwise no request leaves the service and a
missing key is a 412. A null key without a usable server means "no data" (CDS Hooks 2.0.1:
the client sends null when it has nothing). OperationOutcomes in place of a prefetch value
are "no data" and noted in the returned notes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from cds.api.errors import ApiError, issue

log = logging.getLogger("osteohooks.prefetch")

# CS-1.7: the DXA LOINC codes the facts stage reads (used when fhir_profiles/ has none).
CS_1_7_OBSERVATION_CODES: tuple[str, ...] = (
    "38267-1",
    "85394-5",
    "24966-4",
    "38264-8",
    "80946-7",
    "80945-9",
    "80933-5",
    "38261-4",
    "46278-8",
    "46279-6",
    "38263-0",
    "80948-3",
    "80947-5",
    "24701-5",
    "38265-5",
    "83311-1",
)

PATIENT_TOKEN = "{{context.patientId}}"


def prefetch_templates(observation_codes: Sequence[str]) -> dict[str, str]:
    """The contract's prefetch keys and their templates (same for all three services)."""
    codes = ",".join(dict.fromkeys(observation_codes))
    return {
        "patient": f"Patient/{PATIENT_TOKEN}",
        "observations": f"Observation?patient={PATIENT_TOKEN}&code={codes}",
        "conditions": f"Condition?patient={PATIENT_TOKEN}",
        "procedures": f"Procedure?patient={PATIENT_TOKEN}",
        "medicationStatements": f"MedicationStatement?patient={PATIENT_TOKEN}",
        "medicationRequests": f"MedicationRequest?patient={PATIENT_TOKEN}",
        "medicationAdministrations": f"MedicationAdministration?patient={PATIENT_TOKEN}",
    }


@dataclass
class PrefetchResult:
    """What the evaluation reads: resources (Bundles or single resources) and notes."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    no_data: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def allowed_server(url: str | None, allowlist: Sequence[str]) -> bool:
    """True when `url` starts with an allowlist entry, matched on whole path segments:
    `https://fhir.example.org/r4` allows `.../r4` and `.../r4/`, not `.../r4b` nor
    `https://fhir.example.org.evil.example`."""
    if not url:
        return False
    normalised = url.rstrip("/") + "/"
    return any(normalised.startswith(p.rstrip("/") + "/") for p in allowlist if p.strip("/"))


def _is_outcome(value: Mapping[str, Any]) -> bool:
    return value.get("resourceType") == "OperationOutcome"


def check_value(key: str, value: Any) -> None:
    """A prefetch value must be a FHIR resource object (or null); else 400/422."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ApiError(
            400,
            f"prefetch.{key} must be a FHIR resource object or null, got {type(value).__name__}",
            expression=[f"prefetch.{key}"],
        )
    if not isinstance(value.get("resourceType"), str):
        raise ApiError(
            422,
            f"prefetch.{key} has no resourceType: it is not FHIR JSON. Send the search "
            "Bundle (or the Patient) that the discovery template returns, or null.",
            expression=[f"prefetch.{key}.resourceType"],
        )


async def resolve(
    *,
    templates: Mapping[str, str],
    prefetch: Mapping[str, Any] | None,
    patient_id: str,
    fhir_server: str | None,
    access_token: str | None,
    allowlist: Sequence[str],
    timeout: float,
    max_pages: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> PrefetchResult:
    """Collect every template's data from the request or from the FHIR server."""
    given = dict(prefetch or {})
    result = PrefetchResult()
    to_fetch: list[str] = []
    usable = allowed_server(fhir_server, allowlist)
    missing: list[str] = []
    for key in templates:
        if key not in given:
            (to_fetch if usable else missing).append(key)
            continue
        value = given[key]
        check_value(key, value)
        if value is None:
            if usable:
                to_fetch.append(key)
            else:
                result.no_data.append(key)
            continue
        if _is_outcome(value):
            result.no_data.append(key)
            result.notes.append(f"prefetch.{key} is an OperationOutcome: read as no data")
            continue
        result.resources.append(value)
    if missing:
        raise _precondition(missing, fhir_server, allowlist)
    if to_fetch:
        assert fhir_server is not None
        fetched = await _fetch_all(
            {k: templates[k].replace(PATIENT_TOKEN, patient_id) for k in to_fetch},
            fhir_server,
            access_token,
            timeout=timeout,
            max_pages=max_pages,
            transport=transport,
        )
        for key, values in fetched.items():
            result.fetched.append(key)
            useful = [v for v in values if not _is_outcome(v)]
            if not useful:
                result.no_data.append(key)
                result.notes.append(f"{key}: the FHIR server answered with no data")
            result.resources.extend(useful)
    return result


def _precondition(
    missing: list[str], fhir_server: str | None, allowlist: Sequence[str]
) -> ApiError:
    keys = ", ".join(missing)
    if not fhir_server:
        why = "the request names no fhirServer to fetch them from"
    else:
        host = urlsplit(fhir_server).netloc or fhir_server
        why = (
            f"fhirServer ({host}) is not on this service's allowlist "
            "(OSTEOHOOKS_FHIR_SERVER_ALLOWLIST), so nothing was fetched"
        )
    return ApiError(
        412,
        f"Prefetch keys missing: {keys}; {why}. Send them in 'prefetch' (templates in "
        "GET /cds-services; null when there is no data), or send an allowlisted fhirServer "
        "with fhirAuthorization.",
        issues=[
            issue(
                f"prefetch.{key} is missing and cannot be fetched: {why}",
                code="incomplete",
                expression=[f"prefetch.{key}"],
            )
            for key in missing
        ],
    )


async def _fetch_all(
    queries: Mapping[str, str],
    fhir_server: str,
    access_token: str | None,
    *,
    timeout: float,
    max_pages: int,
    transport: httpx.AsyncBaseTransport | None,
) -> dict[str, list[dict[str, Any]]]:
    headers = {"Accept": "application/fhir+json"}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
    base = fhir_server.rstrip("/") + "/"
    async with httpx.AsyncClient(
        headers=headers,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
        follow_redirects=False,
        transport=transport,
    ) as client:
        pairs = list(queries.items())
        pages = await asyncio.gather(
            *(_fetch(client, key, urljoin(base, query), base, max_pages) for key, query in pairs)
        )
    return {key: got for (key, _), got in zip(pairs, pages, strict=True)}


async def _fetch(
    client: httpx.AsyncClient, key: str, url: str, base: str, max_pages: int
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    next_url: str | None = url
    for _ in range(max_pages):
        if next_url is None:
            break
        body = await _get(client, key, next_url)
        if body is None:  # 404 on a read: no such resource
            break
        out.append(body)
        next_url = _next_link(body, base)
    else:
        if next_url is not None:
            log.warning(
                "prefetch %s: stopped after %d pages (fhir_max_pages)",
                key,
                max_pages,
                extra={"prefetchKey": key},
            )
    return out


async def _get(client: httpx.AsyncClient, key: str, url: str) -> dict[str, Any] | None:
    where = f"prefetch.{key}"
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        raise ApiError(
            412,
            f"{where} was not sent and fetching it from fhirServer failed "
            f"({type(exc).__name__}); send it in 'prefetch' or check that fhirServer is "
            "reachable from the CDS service",
            expression=[where],
        ) from None
    if response.status_code == 404 and "?" not in url:
        return None
    if response.status_code != 200:
        raise ApiError(
            412,
            f"{where} was not sent and the FHIR server answered HTTP {response.status_code} "
            "to our request (check that fhirAuthorization grants read access to it)",
            expression=[where],
        )
    try:
        body = response.json()
    except ValueError:
        raise ApiError(
            422, f"{where}: the FHIR server answered with something that is not JSON"
        ) from None
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise ApiError(422, f"{where}: the FHIR server answered with JSON that is not FHIR")
    return body


def _next_link(bundle: Mapping[str, Any], base: str) -> str | None:
    if bundle.get("resourceType") != "Bundle":
        return None
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            # only follow pages on the same server (never let a Bundle redirect the token)
            if isinstance(url, str):
                absolute = urljoin(base, url)
                if absolute.startswith(base):
                    return absolute
                log.warning("prefetch: next link leaves fhirServer, not followed")
    return None
