"""Prefetch: the templates advertised in discovery, and fetching what the client left out.

A key that is missing (or null, when a FHIR server is usable) is fetched from the request's
`fhirServer` with `fhirAuthorization.access_token`, but only when `fhirServer` lies within
an entry of `OSTEOHOOKS_FHIR_SERVER_ALLOWLIST` (`cds.api.urls`: normalised, then matched by
scheme, host, port and path segment, as is every page and Device URL); otherwise no
request leaves the service and a missing key is a 412. A null key without a usable server
means "no data" (CDS Hooks 2.0.1: the client sends null when it has nothing).
OperationOutcomes in place of a prefetch value are "no data" and noted in the returned
notes. All fetches of a call share one deadline and each answer is size-bounded while it
streams; Devices that Observations reference but the data lacks are read (rev 2), or
noted as not available.

An answer larger than `parse_here_bytes` (the service process's `process_body_bytes`, when
it has worker processes for big bodies) is not read further: `ComputeElsewhere` ends the
call's computation in the service process, which computes it again, fetches included, in a
worker process (`cds.api.offload`), where parsing it holds no other call's GIL. The
fetches before it are then made twice; the worker process has a deadline of its own.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx

from cds.api import urls
from cds.api.errors import ApiError, issue
from cds.api.models import FHIR_ID
from cds.fhir.bundle import flatten
from cds.fhir.trace import Trace
from cds.jsontext import loads, lone_surrogate

log = logging.getLogger("osteohooks.prefetch")
_T = TypeVar("_T")

# httpx logs every request line at INFO ("HTTP Request: GET .../Patient/<id>") and httpcore
# the response headers at DEBUG: URLs and headers of fallback fetches hold patient ids.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

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
        "observations": (
            f"Observation?patient={PATIENT_TOKEN}&code={codes}&_include=Observation:device"
        ),
        "conditions": f"Condition?patient={PATIENT_TOKEN}",
        "procedures": f"Procedure?patient={PATIENT_TOKEN}",
        "medicationStatements": f"MedicationStatement?patient={PATIENT_TOKEN}",
        "medicationRequests": f"MedicationRequest?patient={PATIENT_TOKEN}",
        "medicationAdministrations": f"MedicationAdministration?patient={PATIENT_TOKEN}",
    }


class ComputeElsewhere(Exception):
    """A fallback fetch answered more than this process parses (`parse_here_bytes`): the
    call is to be computed in a worker process (`cds.api.offload`)."""


@dataclass
class PrefetchResult:
    """What the evaluation reads: resources (Bundles or single resources) and notes."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    no_data: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def allowed_server(url: str | None, allowlist: Sequence[str]) -> bool:
    """True when `url`, normalised, lies within an allowlist entry by scheme, host, port
    and whole path segments (`cds.api.urls`): `https://fhir.example.org/r4` allows `.../r4`
    and `.../r4/Patient/1`, not `.../r4b`, `.../r4/../private` nor
    `https://fhir.example.org.evil.example`."""
    return urls.allowed(url, allowlist)


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
    deadline: float = 2.0,
    max_bytes: int = 16 * 1024 * 1024,
    transport: httpx.AsyncBaseTransport | None = None,
    parse_here_bytes: int | None = None,
) -> PrefetchResult:
    """Collect every template's data from the request or from the FHIR server, and the
    Devices the Observations reference; all fetches of the call end within `deadline`
    seconds, or the call is a 412 (never partial data). An answer over `parse_here_bytes`
    raises `ComputeElsewhere` (see the module doc)."""
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
        raise _precondition(missing, fhir_server)
    if not usable:
        lacking = _missing_devices(result.resources)
        _devices_unavailable(result, lacking, "not in the prefetch, no allowlisted fhirServer")
        return result
    assert fhir_server is not None
    headers = {"Accept": "application/fhir+json"}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
    started = time.monotonic()
    try:
        async with (
            asyncio.timeout(deadline),
            httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
                follow_redirects=False,
                transport=transport,
            ) as client,
        ):
            fetcher = _Fetcher(
                client, urls.checked(fhir_server, allowlist), allowlist, max_pages, max_bytes
            )
            fetcher.parse_here_bytes = parse_here_bytes
            await _fetch_keys(fetcher, result, templates, to_fetch, patient_id)
            await _fetch_devices(fetcher, result)
    except TimeoutError:
        text = (
            f"Fetching the missing prefetch data from fhirServer took longer than the "
            f"{deadline * 1000:g} ms deadline (OSTEOHOOKS_FHIR_DEADLINE_MS); no cards were "
            "computed from partial data. Send the data in 'prefetch', or make the FHIR "
            "server answer faster."
        )
        raise ApiError(412, text, issues=[issue(text, code="timeout")]) from None
    log.debug(
        "prefetch fallback done",
        extra={"fetched": result.fetched, "fetchMs": round((time.monotonic() - started) * 1e3, 2)},
    )
    return result


async def _fetch_keys(
    fetcher: _Fetcher,
    result: PrefetchResult,
    templates: Mapping[str, str],
    keys: Sequence[str],
    patient_id: str,
) -> None:
    queries = {k: templates[k].replace(PATIENT_TOKEN, patient_id) for k in keys}
    pages = await _all([fetcher.search(k, q) for k, q in queries.items()])
    for key, values in zip(queries, pages, strict=True):
        result.fetched.append(key)
        useful = [v for v in values if not _is_outcome(v)]
        if not useful:
            result.no_data.append(key)
            result.notes.append(f"{key}: the FHIR server answered with no data")
        result.resources.extend(useful)


async def _all(calls: Sequence[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run `calls` concurrently; on the first failure the others are cancelled and awaited
    before it is raised (no request is left running on a closed client)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


_DEVICE_REF = re.compile(rf"^Device/({FHIR_ID})$")


def _resources_of(resources: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The resources of the prefetch and fetched data, Bundles (nested too) walked by the
    FHIR stage's one walk; its data errors are the FHIR stage's to report, later."""
    return [entry.raw for entry in flatten(resources, [], Trace())]


def _missing_devices(resources: Sequence[Mapping[str, Any]]) -> list[str]:
    """Ids of the Devices that Observations reference (`Device/{id}`) and that the data
    lacks, in order of first reference."""
    held: set[str] = set()
    wanted: dict[str, None] = {}
    for res in _resources_of(resources):
        rtype = res.get("resourceType")
        if rtype == "Device" and isinstance(res.get("id"), str):
            held.add(res["id"])
        elif rtype == "Observation":
            device = res.get("device")
            ref = device.get("reference") if isinstance(device, dict) else None
            match = _DEVICE_REF.match(ref) if isinstance(ref, str) else None
            if match:
                wanted[match.group(1)] = None
    return [d for d in wanted if d not in held]


def _devices_unavailable(result: PrefetchResult, ids: Sequence[str], why: str) -> None:
    for device_id in ids:
        result.notes.append(
            f"Device/{device_id} was not available ({why}): the cards name the scanner by "
            "the reference's display"
        )


async def _fetch_devices(fetcher: _Fetcher, result: PrefetchResult) -> None:
    ids = _missing_devices(result.resources)

    async def read(device_id: str) -> dict[str, Any] | None:
        try:
            return await fetcher.get("devices", urls.join(fetcher.base, f"Device/{device_id}"))
        except ApiError as exc:
            log.info("prefetch: a Device read failed", extra={"status": exc.status})
            _devices_unavailable(result, [device_id], "its read from fhirServer failed")
            return None

    got = await _all([read(d) for d in ids])
    for device_id, body in zip(ids, got, strict=True):
        if body is None:
            if not any(f"Device/{device_id} " in n for n in result.notes):
                _devices_unavailable(result, [device_id], "the FHIR server has no such Device")
        elif body.get("resourceType") == "Device":
            result.resources.append(body)
            if "devices" not in result.fetched:
                result.fetched.append("devices")
        else:
            _devices_unavailable(result, [device_id], "the FHIR server answered no Device")


def _precondition(missing: list[str], fhir_server: str | None) -> ApiError:
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


class _Fetcher:
    """The fallback fetches of one call: every URL checked against the allowlist, bodies
    read as a stream up to `max_bytes`, JSON parsed off the event loop."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base: httpx.URL,
        allowlist: Sequence[str],
        max_pages: int,
        max_bytes: int,
    ) -> None:
        self.client = client
        self.base = base
        self.allowlist = allowlist
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self.parse_here_bytes: int | None = None  # larger answers: ComputeElsewhere

    async def search(self, key: str, query: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        next_url: str | None = urls.join(self.base, query)
        for _ in range(self.max_pages):
            if next_url is None:
                break
            body = await self.get(key, next_url)
            if body is None:  # 404 on a read: no such resource
                break
            out.append(body)
            next_url = self._next_link(body)
        else:
            if next_url is not None:
                log.warning(
                    "prefetch %s: stopped after %d pages (fhir_max_pages)",
                    key,
                    self.max_pages,
                    extra={"prefetchKey": key},
                )
        return out

    def _next_link(self, bundle: Mapping[str, Any]) -> str | None:
        if bundle.get("resourceType") != "Bundle":
            return None
        links = bundle.get("link")
        for link in links if isinstance(links, list) else []:
            if isinstance(link, dict) and link.get("relation") == "next":
                url = link.get("url")
                if not isinstance(url, str):
                    return None
                absolute = urls.join(self.base, url)
                try:  # never let a Bundle send the token outside the allowlist
                    return str(urls.checked(absolute, self.allowlist))
                except urls.UrlRefused as exc:
                    log.warning("prefetch: next link not followed: %s", exc)
                    return None
        return None

    async def get(self, key: str, url: str) -> dict[str, Any] | None:
        where = f"prefetch.{key}"
        try:
            target = urls.checked(url, self.allowlist)
        except urls.UrlRefused as exc:
            raise ApiError(
                412,
                f"{where} was not sent and the URL it would be fetched from is refused: {exc}",
                expression=[where],
            ) from None
        try:
            async with self.client.stream("GET", target) as response:
                if response.status_code == 404 and "?" not in url:
                    return None
                if response.status_code != 200:
                    raise ApiError(
                        412,
                        f"{where} was not sent and the FHIR server answered HTTP "
                        f"{response.status_code} to our request (check that "
                        "fhirAuthorization grants read access to it; redirects are not "
                        "followed)",
                        expression=[where],
                    )
                raw = await self._read(where, response)
        except httpx.HTTPError as exc:
            raise ApiError(
                412,
                f"{where} was not sent and fetching it from fhirServer failed "
                f"({type(exc).__name__}); send it in 'prefetch' or check that fhirServer is "
                "reachable from the CDS service",
                expression=[where],
            ) from None
        try:
            body = await anyio.to_thread.run_sync(loads, raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ApiError(
                422, f"{where}: the FHIR server answered with something that is not JSON"
            ) from None
        bad = lone_surrogate(raw, body)
        if bad is not None:
            raise ApiError(
                422,
                f"{where}: the FHIR server's answer holds a lone UTF-16 surrogate at {bad}, "
                "which is not Unicode text",
                expression=[where],
            )
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise ApiError(422, f"{where}: the FHIR server answered with JSON that is not FHIR")
        return body

    async def _read(self, where: str, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit():
            self._check_size(where, int(declared))
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            self._check_size(where, size)
            chunks.append(chunk)
        return b"".join(chunks)

    def _check_size(self, where: str, size: int) -> None:
        if size > self.max_bytes:
            raise self._too_large(where)
        if self.parse_here_bytes is not None and size > self.parse_here_bytes:
            raise ComputeElsewhere(where)

    def _too_large(self, where: str) -> ApiError:
        return ApiError(
            412,
            f"{where} was not sent and the FHIR server's answer is larger than "
            f"{self.max_bytes} bytes (OSTEOHOOKS_FHIR_MAX_BYTES), so it was not read; send "
            "the data in 'prefetch' or restrict the search",
            expression=[where],
        )
