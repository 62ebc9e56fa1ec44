"""The state one service instance shares between its routes, guard and lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import anyio
import httpx

from cds.api.auth import JwtVerifier
from cds.api.ruleset import EvaluatorLike, RuleSetHolder
from cds.settings import Settings
from cds.store import Store

if TYPE_CHECKING:
    from cds.api.offload import Offload

JSON = "application/json"


@dataclass(frozen=True)
class CallEnv:
    """What computing one hook call reads: in the service process (`ServiceState.env`) or,
    for a big body, in a worker process (`cds.api.offload`): the same values."""

    settings: Settings
    templates: dict[str, str]
    evaluator: EvaluatorLike
    as_of: date
    fhir_transport: httpx.AsyncBaseTransport | None = None
    limiter: anyio.CapacityLimiter | None = None
    #: a fallback fetch's answer over this many bytes is not parsed here: the call is
    #: computed in a worker process instead (`cds.api.prefetch.ComputeElsewhere`); None:
    #: every answer is parsed here (a worker process, or a service without one)
    parse_here_bytes: int | None = None
    #: told the hookInstance once the body is parsed (a worker process notes it for the
    #: service process's audit, should it die before answering)
    heard: Callable[[str], None] | None = None


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
    #: the worker processes for big bodies (None: every body is computed in-process)
    offload: Offload | None = None

    def env(self) -> CallEnv:
        """The call environment now (the evaluator in service, today's date)."""
        return CallEnv(
            settings=self.settings,
            templates=self.templates,
            evaluator=self.holder.evaluator,
            as_of=self.settings.as_of or self.today(),
            fhir_transport=self.fhir_transport,
            limiter=self.eval_limiter,
            parse_here_bytes=None if self.offload is None else self.settings.process_body_bytes,
        )
