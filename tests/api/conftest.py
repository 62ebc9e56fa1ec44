"""Fixtures for the HTTP layer: a test double of the pipeline's Evaluator, app factories,
JWT keys and tokens."""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

with warnings.catch_warnings():  # starlette deprecates its httpx-based TestClient
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient as TestClient

from cds.api import create_app
from cds.api.auth import JwtVerifier, load_trusted_issuers
from cds.contracts.cards import Card
from cds.settings import Settings
from cds.store import Store

BASE_URL = "https://cds.test.example"
ISSUER = "https://ehr.test.example/"
KID = "test-key-1"
PATIENT_ID = "pat-1"


def card(
    topic: str = "bmd-classification", rule: str = "classification.t.osteoporosis"
) -> dict[str, Any]:
    return {
        "uuid": str(uuid.uuid4()),
        "summary": "Osteoporosis: lowest T-score -2.7 at the lumbar spine",
        "indicator": "warning",
        "source": {
            "label": "ISCD 2019 Adult Official Positions",
            "url": "https://iscd.org/official-positions-2019",
            "topic": {"system": "https://osteohooks.org/fhir/CodeSystem/card-topic", "code": topic},
        },
        "extension": {
            "org.osteohooks": {"rule": rule, "evidence": ["CS-2.2"], "rulesetVersion": "v-test"}
        },
    }


@dataclass
class FakeResult:
    cards: list[Card]
    outcome: dict[str, Any] | None = None
    trace: Any = None
    fired: list[str] = field(default_factory=list)


class FakeEvaluator:
    """Implements the Evaluator interface the service uses (ruleset_version, evaluate).

    Its cards are given as JSON and come out as the contract's `Card`, as the card builder
    makes them: a card that is not one fails the evaluation, as it does in the builder."""

    ruleset_version = "v-test"

    def __init__(self, cards: list[dict[str, Any]] | None = None, error: Exception | None = None):
        self.cards = cards if cards is not None else [card()]
        self.error = error
        self.inputs: list[Any] = []

    def evaluate(self, data: Any) -> FakeResult:
        self.inputs.append(data)
        if self.error is not None:
            raise self.error
        return FakeResult(
            cards=[Card.model_validate(c) for c in self.cards],
            fired=["classification.t.osteoporosis"],
        )


def patient_view_request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/abc", "patientId": PATIENT_ID},
        "prefetch": {
            "patient": {
                "resourceType": "Patient",
                "id": PATIENT_ID,
                "gender": "female",
                "birthDate": "1950-01-01",
            },
            "observations": {"resourceType": "Bundle", "type": "searchset", "entry": []},
            "conditions": None,
            "procedures": None,
            "medicationStatements": None,
            "medicationRequests": None,
            "medicationAdministrations": None,
        },
    }
    body.update(overrides)
    return body


def draft_orders() -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "id": "dxa-1",
                    "status": "draft",
                    "intent": "order",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "38269-7"}]},
                    "subject": {"reference": f"Patient/{PATIENT_ID}"},
                }
            }
        ],
    }


def order_request(hook: str, **context: Any) -> dict[str, Any]:
    body = patient_view_request()
    body["hook"] = hook
    body["context"] = {
        "userId": "Practitioner/abc",
        "patientId": PATIENT_ID,
        "draftOrders": draft_orders(),
    }
    if hook == "order-select":
        body["context"]["selections"] = ["ServiceRequest/dxa-1"]
    body["context"].update(context)
    return body


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'osteohooks.db'}"


@pytest.fixture
def make_client(db_url: str) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def factory(
        evaluator: Any = None, app_kwargs: dict[str, Any] | None = None, **settings: Any
    ) -> TestClient:
        settings.setdefault("auth", "none")
        settings.setdefault("database_url", db_url)
        app = create_app(Settings(**settings), evaluator or FakeEvaluator(), **(app_kwargs or {}))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


# --------------------------------------------------------------------------- JWT


@dataclass
class Keys:
    private: ec.EllipticCurvePrivateKey
    jwks: dict[str, Any]
    issuers_file: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    private = ec.generate_private_key(ec.SECP384R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    public.update({"kid": KID, "use": "sig", "alg": "ES384"})
    jwks = {"keys": [public]}
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps({ISSUER: {"jwks": jwks}}))
    return Keys(private, jwks, path)


def token(
    keys: Keys,
    aud: str | list[str] = f"{BASE_URL}/cds-services",
    *,
    headers: dict[str, Any] | None = None,
    key: Any = None,
    algorithm: str = "ES384",
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": aud,
        "exp": now + 300,
        "iat": now,
        "jti": str(uuid.uuid4()),
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    header = {"kid": KID, "typ": "JWT"}
    header.update(headers or {})
    return jwt.encode(
        payload, key if key is not None else keys.private, algorithm=algorithm, headers=header
    )


@pytest.fixture
def jwt_client(make_client: Callable[..., TestClient], keys: Keys) -> TestClient:
    return make_client(auth="jwt", trusted_issuers=keys.issuers_file, base_url=BASE_URL)


def verifier_for(keys: Keys, **kwargs: Any) -> JwtVerifier:
    return JwtVerifier(load_trusted_issuers(keys.issuers_file), **kwargs)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


# --------------------------------------------------------------------------- PostgreSQL

POSTGRES_ENV = "OSTEOHOOKS_TEST_POSTGRES_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def postgres_url() -> str:
    """The test PostgreSQL URL. Without one (or unreachable) the test is skipped, except
    in CI (CI=true, set by .ci/run), where it fails: CI runs the PostgreSQL tests for real."""
    url = os.environ.get(POSTGRES_ENV)
    why = None
    if not url:
        why = f"set {POSTGRES_ENV} to run against PostgreSQL (.ci/run does)"
    else:
        from sqlalchemy import create_engine, text

        engine = create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            why = f"PostgreSQL at {POSTGRES_ENV} is unreachable: {type(exc).__name__}"
        finally:
            engine.dispose()
    if why is not None:
        if _in_ci():
            pytest.fail(f"CI=true: {why}")
        pytest.skip(why)
    assert url is not None
    return url
