"""A tiny FHIR server on 127.0.0.1 (uvicorn in a thread) for the prefetch fallback tests."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TOKEN = "fhir-access-token-123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class FhirServer:
    """Patient/{id}; <Type>?patient= searches; Observation in two pages; knobs for faults."""

    port: int = field(default_factory=free_port)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # resource type -> HTTP status
    slow: set[str] = field(default_factory=set)  # resource types that hang
    endless: bool = False  # Observation pages never end
    foreign_next: bool = False  # Observation next link points to another host
    next_url: str | None = None  # Observation page 1 links to this URL as its next page
    redirect: str | None = None  # every answer is a 302 to this URL
    trickle: float = 0.0  # Observation answers one byte per 50 ms over this many seconds
    huge_bytes: int = 0  # Observation answers a Bundle this large, streamed, no length
    sent_bytes: int = 0  # bytes of the huge answer actually produced
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # Device/{id} reads
    observation_device: str | None = None  # Observations reference Device/<this>

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def bundle(self, entries: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(entries),
            "entry": [{"resource": r} for r in entries],
        }
        if next_url:
            out["link"] = [{"relation": "next", "url": next_url}]
        return out

    async def handle(self, request: Request) -> Response:
        rtype = request.path_params["rtype"]
        rid = request.path_params.get("rid")
        self.requests.append(
            (request.url.path, request.url.query, request.headers.get("authorization"))
        )
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"resourceType": "OperationOutcome", "issue": []}, status_code=401)
        if rtype in self.slow:
            await asyncio.sleep(0.8)
        if rtype in self.fail:
            return JSONResponse(
                {"resourceType": "OperationOutcome", "issue": []}, status_code=self.fail[rtype]
            )
        if self.redirect is not None:
            return Response(status_code=302, headers={"location": self.redirect})
        if rid is not None:
            if rtype == "Device" and rid in self.devices:
                return JSONResponse(self.devices[rid])
            if rtype == "Patient" and rid == "pat-1":
                return JSONResponse(
                    {
                        "resourceType": "Patient",
                        "id": "pat-1",
                        "gender": "female",
                        "birthDate": "1950-01-01",
                    }
                )
            return JSONResponse({"resourceType": "OperationOutcome", "issue": []}, status_code=404)
        page = int(request.query_params.get("page", "1"))
        if rtype == "Observation" and self.trickle:
            return StreamingResponse(self._trickle(), media_type="application/fhir+json")
        if rtype == "Observation" and self.huge_bytes:
            return StreamingResponse(self._huge(), media_type="application/fhir+json")
        if rtype == "Observation":
            obs: dict[str, Any] = {
                "resourceType": "Observation",
                "id": f"obs-{page}",
                "status": "final",
            }
            if self.observation_device:
                obs["device"] = {
                    "reference": f"Device/{self.observation_device}",
                    "display": "Scanner by display",
                }
            if self.next_url and page == 1:
                return JSONResponse(self.bundle([obs], self.next_url))
            if self.foreign_next:
                return JSONResponse(
                    self.bundle([obs], "http://127.0.0.2:9/fhir/Observation?page=2")
                )
            more = self.endless or page < 2
            nxt = f"{self.base}/Observation?patient=pat-1&page={page + 1}" if more else None
            return JSONResponse(self.bundle([obs], nxt))
        if rtype == "Condition":
            return JSONResponse(self.bundle([{"resourceType": "Condition", "id": "c-1"}]))
        return JSONResponse(self.bundle([]))

    async def _trickle(self) -> AsyncIterator[bytes]:
        text = json.dumps(self.bundle([])).encode()
        pad = b" " * max(0, int(self.trickle / 0.05) - len(text))
        for byte in pad + text:
            yield bytes([byte])
            await asyncio.sleep(0.05)

    async def _huge(self) -> AsyncIterator[bytes]:
        entry = b'{"resource":{"resourceType":"Observation","status":"final"}},'
        head = b'{"resourceType":"Bundle","type":"searchset","entry":['
        yield head
        self.sent_bytes += len(head)
        chunk = entry * 1000
        while self.sent_bytes < self.huge_bytes:
            yield chunk
            self.sent_bytes += len(chunk)
            await asyncio.sleep(0)
        yield entry[:-1] + b"]}"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/fhir/{rtype}", self.handle),
                Route("/fhir/{rtype}/{rid}", self.handle),
            ]
        )


class RunningServer:
    def __init__(self, fhir: FhirServer | StoryFhirServer) -> None:
        config = uvicorn.Config(
            fhir.app(), host="127.0.0.1", port=fhir.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("FHIR test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class StoryFhirServer:
    """A FHIR server holding given resources (a story's): reads `<Type>/{id}`; searches
    `<Type>?patient=<id>` with `code=` (tokens `code` or `system|code`, comma = or) and
    `_include=Observation:device`, as the discovery templates use them."""

    resources: list[dict[str, Any]]
    port: int = field(default_factory=free_port)
    requests: list[tuple[str, str]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def _read(self, rtype: str, rid: str) -> dict[str, Any] | None:
        for resource in self.resources:
            if resource.get("resourceType") == rtype and resource.get("id") == rid:
                return resource
        return None

    async def read(self, request: Request) -> Response:
        self.requests.append((request.url.path, request.url.query))
        found = self._read(request.path_params["rtype"], request.path_params["rid"])
        if found is None:
            return JSONResponse({"resourceType": "OperationOutcome", "issue": []}, status_code=404)
        return JSONResponse(found)

    async def search(self, request: Request) -> Response:
        self.requests.append((request.url.path, request.url.query))
        rtype = request.path_params["rtype"]
        params = request.query_params
        known = {"patient", "code", "_include"}
        if set(params) - known:
            return JSONResponse({"resourceType": "OperationOutcome", "issue": []}, status_code=400)
        patient = f"Patient/{params.get('patient')}"
        codes = [c for c in params.get("code", "").split(",") if c]
        matches = [
            r
            for r in self.resources
            if r.get("resourceType") == rtype
            and (r.get("subject") or r.get("patient") or {}).get("reference") == patient
            and (not codes or self._coded(r, codes))
        ]
        entries = [{"resource": r, "search": {"mode": "match"}} for r in matches]
        if params.get("_include") == "Observation:device" and rtype == "Observation":
            seen: set[str] = set()
            for r in matches:
                ref = (r.get("device") or {}).get("reference", "")
                if ref.startswith("Device/") and ref not in seen:
                    seen.add(ref)
                    device = self._read("Device", ref.removeprefix("Device/"))
                    if device is not None:
                        entries.append({"resource": device, "search": {"mode": "include"}})
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        bundle["total"] = len(matches)
        if entries:
            bundle["entry"] = entries
        return JSONResponse(bundle)

    @staticmethod
    def _coded(resource: dict[str, Any], codes: list[str]) -> bool:
        for coding in (resource.get("code") or {}).get("coding") or []:
            for token in codes:
                system, _, code = token.rpartition("|")
                if coding.get("code") == code and (not system or coding.get("system") == system):
                    return True
        return False

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/fhir/{rtype}", self.search),
                Route("/fhir/{rtype}/{rid}", self.read),
            ]
        )
