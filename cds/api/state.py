"""The state one service instance shares between its routes, guard and lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import anyio
import httpx

from cds.api.auth import JwtVerifier
from cds.api.ruleset import RuleSetHolder
from cds.settings import Settings
from cds.store import Store

JSON = "application/json"


@dataclass
class ServiceState:
    settings: Settings
    holder: RuleSetHolder
    store: Store
    verifier: JwtVerifier | None
    templates: dict[str, str]
    discovery_body: bytes
    fhir_transport: httpx.AsyncBaseTransport | None = None
    today: Callable[[], date] = field(default=lambda: datetime.now(UTC).date())
    eval_limiter: anyio.CapacityLimiter | None = None
